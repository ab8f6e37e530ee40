"""The results of a sweep (`clo-recipe sweep`, run by `runner/sweep.py`): each point's metrics,
seeds folded into a mean and a spread, and the paper's data-efficiency tables and plots.

Seeds (`train.seed`, `data.seed`) are an axis like any other, but the tables and plots
aggregate over them: each (sample count, method) shows the mean over seeds and its spread
(min-max), and the reading asks the paper's question: does CLO at n match SFT at 2n?
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clo_recipes.errors import CloError

from .compare import relative_metrics
from .report import fmt_share, headline

SEED_AXES = ("train.seed", "data.seed")
METRIC_LABELS = {
    "win": "judge win rate, target-language prompts", "win_en": "judge win rate, English prompts",
    "fidelity": "answers in the target language", "fidelity_en": "answers in English to English prompts",
    "mc": "multiple-choice accuracy, target language", "mc_en": "multiple-choice accuracy, English",
    "nll": "held-out answer NLL, target language (nats/token)",
    "nll_en": "held-out answer NLL, English (nats/token)",
}
LOWER_IS_BETTER = {"nll", "nll_en"}


@dataclass
class SweepPoint:
    point: dict[str, str]
    name: str
    run_dir: Path | None
    model: str | None  # the point's trained model label
    metrics: dict[str, Any]  # relative metric names (see compare.relative_metrics)
    error: str | None = None
    stages: dict[str, dict] = field(default_factory=dict)  # stage id -> {"status", "seconds"}


def point_result(point: dict[str, str], name: str, run_dir: Path) -> SweepPoint:
    """Read a finished point's report: the metrics of its trained model (its method)."""
    from .runs import load_run

    run = load_run(run_dir)
    if run.report is None:
        return SweepPoint(point, name, run_dir, None, {}, "no finished report")
    label = run.main_model()
    row = headline(run.report).get(label, {})
    return SweepPoint(point, name, run_dir, label, relative_metrics(row, run.language))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def choose_metric(points: list[SweepPoint], wanted: str | None) -> str:
    """The requested metric, else the judge win rate when every point has it, else fidelity."""
    if wanted:
        if wanted not in METRIC_LABELS:
            raise CloError(f"unknown sweep metric '{wanted}'", hint=f"choose one of {', '.join(METRIC_LABELS)}")
        return wanted
    measured = [p for p in points if p.metrics]
    if measured and all("win" in p.metrics for p in measured):
        return "win"
    return "fidelity"


def axis_keys(axes: list[tuple[str, list[str]]]) -> tuple[str, str | None]:
    """(x axis, line axis): `data.samples` (or the first all-numeric axis that is not a seed)
    against the method (or the first other axis that is not a seed)."""
    keys = [key for key, _ in axes]
    numeric = [key for key, values in axes
               if key not in SEED_AXES and all(v.replace(".", "", 1).isdigit() for v in values)]
    x_key = "data.samples" if "data.samples" in keys else (numeric[0] if numeric else keys[0])
    others = [key for key in keys if key != x_key and key not in SEED_AXES]
    line_key = "method.name" if "method.name" in others else (others[0] if others else None)
    return x_key, line_key


# ----------------------------------------------------------------------------- seeds
@dataclass
class Aggregate:
    """One grid point with its seeds folded: the mean over seeds and its spread."""

    point: dict[str, str]  # the non-seed axes
    values: list[float]
    intervals: list[tuple[float | None, float | None]]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def spread(self) -> tuple[float | None, float | None]:
        """(min, max) over seeds; with one seed, that run's own 95% interval."""
        if len(self.values) > 1:
            return min(self.values), max(self.values)
        return self.intervals[0]


def aggregate_seeds(points: list[SweepPoint], metric: str) -> list[Aggregate]:
    """Points that differ only in seed axes, grouped (in first-seen order)."""
    groups: dict[tuple, Aggregate] = {}
    for point in points:
        stats = point.metrics.get(metric)
        if not stats or stats.get("value") is None:
            continue
        key_point = {k: v for k, v in point.point.items() if k not in SEED_AXES}
        group = groups.setdefault(tuple(key_point.items()), Aggregate(key_point, [], []))
        group.values.append(stats["value"])
        group.intervals.append((stats.get("low"), stats.get("high")))
    return list(groups.values())


def efficiency_lines(points: list[SweepPoint], metric: str, x_key: str, line_key: str | None) -> dict[str, list]:
    """label -> [(x, (mean over seeds, spread low, spread high))]."""
    lines: dict[str, list] = {}
    for group in aggregate_seeds(points, metric):
        if x_key not in group.point:
            continue
        label = group.point.get(line_key, "run") if line_key else "run"
        low, high = group.spread
        lines.setdefault(label, []).append((float(group.point[x_key]), (group.mean, low, high)))
    return lines


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if metric in LOWER_IS_BETTER else f"{value * 100:.1f}"


def fmt_aggregate(group: Aggregate, metric: str) -> str:
    low, high = group.spread
    text = _fmt(group.mean, metric)
    if low is not None:
        text += f" [{_fmt(low, metric)}–{_fmt(high, metric)}]"
    return text + (f" ({len(group.values)} seeds)" if len(group.values) > 1 else "")


def sweep_table_rows(points: list[SweepPoint], metric: str) -> tuple[list[str], list[list[str]]]:
    """One row per point (every seed its own row)."""
    keys = list(points[0].point) if points else []
    header = [*keys, "run", metric, "n"]
    rows = []
    for point in points:
        stats = point.metrics.get(metric)
        value = fmt_share(stats) if stats else (f"failed: {point.error.splitlines()[0]}" if point.error else "–")
        rows.append([*point.point.values(), point.name, value, str(stats.get("n", "–")) if stats else "–"])
    return header, rows


def efficiency_table(points: list[SweepPoint], metric: str, x_key: str, line_key: str | None) -> list[str]:
    """Markdown: one row per x value, one column per line, mean [spread] over seeds."""
    groups = aggregate_seeds(points, metric)
    labels = list(dict.fromkeys(g.point.get(line_key, "run") if line_key else "run" for g in groups))
    xs = sorted({float(g.point[x_key]) for g in groups if x_key in g.point})
    cell = {(float(g.point[x_key]), g.point.get(line_key, "run") if line_key else "run"): g
            for g in groups if x_key in g.point}
    lines = ["| " + " | ".join([x_key, *labels]) + " |", "|" + "---|" * (len(labels) + 1)]
    for x in xs:
        lines.append("| " + " | ".join([_number(x), *(fmt_aggregate(cell[(x, label)], metric) if (x, label) in cell
                                                      else "–" for label in labels)]) + " |")
    return lines


def paper_reading(points: list[SweepPoint], metric: str, x_key: str, line_key: str | None,
                  method: str = "clo", baseline: str = "sft") -> list[str]:
    """For every n whose 2n is in the sweep: CLO at n against SFT at 2n (means over seeds),
    and whether their seed spreads overlap (then the sweep cannot tell them apart)."""
    if line_key != "method.name":
        return []
    cell = {(float(g.point[x_key]), g.point.get(line_key)): g for g in aggregate_seeds(points, metric) if x_key in g.point}
    rows = []
    for (x, label), group in sorted(cell.items()):
        other = cell.get((2 * x, baseline))
        if label != method or other is None:
            continue
        lower = metric in LOWER_IS_BETTER
        better = group.mean <= other.mean if lower else group.mean >= other.mean
        (a_low, a_high), (b_low, b_high) = group.spread, other.spread
        overlap = None not in (a_low, a_high, b_low, b_high) and a_low <= b_high and b_low <= a_high
        verdict = ("matches or beats" if better else "falls short of") + (" (spreads overlap)" if overlap else "")
        rows.append(f"| {_number(x)} | {fmt_aggregate(group, metric)} | {_number(2 * x)} | "
                    f"{fmt_aggregate(other, metric)} | {method} {verdict} |")
    if not rows:
        return []
    return [f"| {method} n | {method} | {baseline} 2n | {baseline} | reading |", "|---|---|---|---|---|", *rows]


def write_sweep(points: list[SweepPoint], axes: list[tuple[str, list[str]]], metrics: str | list[str], folder: Path,
                title: str) -> list[Path]:
    """sweep.json, sweep.md, sweep.html and one plot per metric (`data_efficiency.png` for a
    single metric, `data_efficiency_<metric>.png` for several)."""
    from .plots import line_plot

    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    folder.mkdir(parents=True, exist_ok=True)
    x_key, line_key = axis_keys(axes)
    ran = [s for p in points for s in p.stages.values() if s.get("status") == "ran"]
    reused = [s for p in points for s in p.stages.values() if s.get("status") == "reused"]
    document = {"metrics": chosen, "metric": chosen[0], "x": x_key, "lines": line_key,
                "seed_axes": [key for key, _ in axes if key in SEED_AXES],
                "stage_seconds": round(sum(s["seconds"] for s in ran), 2), "stages_run": len(ran),
                "stages_reused": len(reused),
                "stage_seconds_avoided": round(sum(s.get("avoided_s", 0.0) for s in reused), 2),
                "points": [{"point": p.point, "name": p.name, "run_dir": str(p.run_dir) if p.run_dir else None,
                            "model": p.model, "metrics": p.metrics, "error": p.error, "stages": p.stages}
                           for p in points]}
    (folder / "sweep.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    text = [f"# {title}", ""]
    if ran or reused:
        text += [f"Stages run: {len(ran)} ({document['stage_seconds']:.0f} stage-seconds); stages reused from "
                 f"other points: {len(reused)}, which took {document['stage_seconds_avoided']:.0f} stage-seconds "
                 "where they ran (for slices, at the largest sample count: an upper bound of what was saved).", ""]
    spread_note = ("mean over seeds [min–max over seeds]" if document["seed_axes"]
                   else "value [95% interval of the run]")
    for metric in chosen:
        unit = "nats/token, lower is better" if metric in LOWER_IS_BETTER else "%"
        text += [f"## {METRIC_LABELS.get(metric, metric)}", "", f"{unit}; {spread_note}.", "",
                 *efficiency_table(points, metric, x_key, line_key), ""]
        reading = paper_reading(points, metric, x_key, line_key)
        if reading:
            text += ["Does CLO at n match or beat SFT at 2n?", "", *reading, ""]
    header, rows = sweep_table_rows(points, chosen[0])
    text += ["## Every point", "", f"{METRIC_LABELS.get(chosen[0], chosen[0])}, % [95% interval]", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    text += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    (folder / "sweep.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    written = [folder / "sweep.json", folder / "sweep.md"]

    numeric_x = all(v.replace(".", "", 1).isdigit() for key, values in axes if key == x_key for v in values)
    for metric in chosen:
        lines = efficiency_lines(points, metric, x_key, line_key) if numeric_x else {}
        if not lines:  # a metric-against-count plot needs a numeric axis and a result
            continue
        name = "data_efficiency.png" if len(chosen) == 1 else f"data_efficiency_{metric}.png"
        band = "band: min–max over seeds" if document["seed_axes"] else "band: 95% interval"
        written.append(line_plot(folder / name, title=f"{title}\n{METRIC_LABELS.get(metric, metric)} ({band})",
                                 lines=lines, xlabel="training samples" if x_key == "data.samples" else x_key,
                                 ylabel=METRIC_LABELS.get(metric, metric),
                                 ylim=None if metric in LOWER_IS_BETTER else (0.0, 1.0)))

    # sweep.html: the same tables and plots on one self-contained page, each point linked to its run's page
    from .pages.across import render_sweep_page

    page = render_sweep_page(points, axes, chosen, title, document, folder.resolve())
    (folder / "sweep.html").write_text(page, encoding="utf-8")
    return [*written, folder / "sweep.html"]
