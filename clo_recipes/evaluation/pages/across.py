"""compare.html and sweep.html: the page of several runs, from the same structures as
compare.md / sweep.md, each run linked to its own report.html."""

from __future__ import annotations

import os
from pathlib import Path

from ..plots import grouped_bars, line_plot
from .shell import esc, figure, metric_table, page, simple_table


def run_page_link(run_dir: Path | None, page_dir: Path) -> str | None:
    """The relative link from a page in `page_dir` to a run's newest report.html, if it has one."""
    if run_dir is None:
        return None
    from ..runs import finished_stage_dirs

    for folder in finished_stage_dirs(Path(run_dir), "report"):
        if (folder / "report.html").is_file():
            return Path(os.path.relpath(folder / "report.html", page_dir)).as_posix()
    return None


def markdown_table_html(lines: list[str]) -> str:
    """A markdown table this package wrote (sweep.md's readings) as an HTML table, so both
    pages show the very same rows."""
    cells = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines
             if line.strip() and not set(line.strip()) <= set("|-")]
    return simple_table(cells[0], cells[1:]) if cells else ""


def render_compare_page(comparison, runs: list, page_dir: Path) -> str:
    """Runs side by side: the metric table (best per column marked), a bar chart per metric
    family, notes, and every run with a link to its own page."""
    from ..compare import _header

    metrics = comparison.metric_keys()
    columns = [(f"{language}|{metric}", f"{language} · {_header(metric, comparison.baseline)}", metric.startswith("nll"))
               for language in comparison.languages for metric in metrics]

    def cell(row: str, key: str):
        language, metric = key.split("|", 1)
        return comparison.cell(row, language, metric)

    title = "Comparison of " + ", ".join(run.name for run in runs)
    body = [f"<header><h1>{esc(title)}</h1>",
            '<p class="meta">Rows are models; metric names are relative to each run\'s target language (fidelity: on '
            'target-language prompts, fidelity en: on English prompts). Runs that differ only in their seeds are one '
            'row: the mean over seeds [min–max over seeds].</p></header>',
            '<h2 id="table">Metrics</h2>',
            metric_table(comparison.rows(), columns, cell, table_id="compare-table")]
    for metric, ylabel, label in (("fidelity", "share of answers", "answers in the target language"),
                                  ("mc", "accuracy", "multiple-choice accuracy"),
                                  ("win", "win rate (ties = ½)", "judge win rate vs each run's baseline"),
                                  ("xwin", "win rate (ties = ½)", f"judge win rate vs {comparison.baseline}")):
        if metric not in metrics:
            continue
        series = {}
        for row in comparison.rows():
            points = [(s["value"], s["low"], s["high"]) if (s := comparison.cell(row, language, metric)) else None
                      for language in comparison.languages]
            if any(points):
                series[row] = points
        svg = grouped_bars(None, title=label, groups=comparison.languages, series=series, ylabel=ylabel,
                           reference=0.5 if metric in ("win", "xwin") else None)
        body.append(figure(svg, f"{label}, target-language prompts, per target language; error bars: 95% interval "
                                "or min–max over seeds.", label))
    if comparison.notes:
        body += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{esc(note)}</li>" for note in comparison.notes) + "</ul>"]
    rows = []
    for run in runs:
        link = run_page_link(run.run_dir, page_dir)
        rows.append([f'<a href="{esc(link)}">{esc(run.name)}</a>' if link else esc(run.name), esc(run.language),
                     esc(", ".join(run.evaluations)), esc(run.run_dir)])
    body += ['<h2 id="runs">Runs</h2>', simple_table(["run (its page)", "language", "models", "folder"], rows,
                                                      raw=(0, 1, 2, 3))]
    return page(title, body)


def render_sweep_page(points: list, axes: list, metrics: list[str], title: str, document: dict, page_dir: Path) -> str:
    """Per metric: the data-efficiency plot (seed spread as a band), the table of means over
    seeds, the CLO at n vs SFT at 2n reading; then every point linked to its run's page."""
    from ..sweep import (LOWER_IS_BETTER, METRIC_LABELS, axis_keys, efficiency_lines, efficiency_table,
                         paper_reading, sweep_table_rows)

    x_key, line_key = axis_keys(axes)
    seeds = document["seed_axes"]
    band = "band: min–max over seeds" if seeds else "band: 95% interval of the run"
    grid = ", ".join(f"{key} = {'/'.join(values)}" for key, values in axes)
    body = [f"<header><h1>{esc(title)}</h1>",
            f'<p class="meta">{len(points)} points ({esc(grid)}); '
            f'stages run: {document["stages_run"]}, reused from other points: {document["stages_reused"]}.</p>'
            "</header>"]
    numeric_x = all(v.replace(".", "", 1).isdigit() for key, values in axes if key == x_key for v in values)
    for metric in metrics:
        label = METRIC_LABELS.get(metric, metric)
        unit = "nats/token, lower is better" if metric in LOWER_IS_BETTER else "%"
        body.append(f'<h2 id="metric-{esc(metric)}">{esc(label)}</h2>')
        lines = efficiency_lines(points, metric, x_key, line_key) if numeric_x else {}
        if lines:
            svg = line_plot(None, title=f"{label} ({band})", lines=lines,
                            xlabel="training samples" if x_key == "data.samples" else x_key, ylabel=label,
                            ylim=None if metric in LOWER_IS_BETTER else (0.0, 1.0))
            body.append(figure(svg, f"{label} against {x_key}, one line per {line_key or 'run'}; {band}.",
                               f"data efficiency: {label}"))
        body += [f'<p class="note">{esc(unit)}; {"mean over seeds [min–max over seeds]" if seeds else "value [95% interval]"}.</p>',
                 markdown_table_html(efficiency_table(points, metric, x_key, line_key))]
        reading = paper_reading(points, metric, x_key, line_key)
        if reading:
            body += ["<h3>Does CLO at n match or beat SFT at 2n?</h3>", markdown_table_html(reading)]
    header, rows = sweep_table_rows(points, metrics[0])
    linked = []
    for point, row in zip(points, rows):
        link = run_page_link(point.run_dir, page_dir)
        cells = [esc(value) for value in row]
        cells[header.index("run")] = f'<a href="{esc(link)}">{esc(point.name)}</a>' if link else esc(point.name)
        linked.append(cells)
    body += ['<h2 id="points">Every point</h2>', f'<p class="note">{esc(METRIC_LABELS.get(metrics[0], metrics[0]))}; '
             'each run links to its own report page.</p>',
             simple_table(header, linked, raw=tuple(range(len(header))))]
    return page(title, body)
