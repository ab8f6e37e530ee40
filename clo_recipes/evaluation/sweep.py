"""`clo-recipe sweep`: run a grid of recipe overrides and draw the paper's data-efficiency plot.

`--grid method.name=clo,sft --grid data.samples=800,1600` expands to the four combinations;
each runs as its own run (named `<name>-clo-800`, ...) through the engine, so translation
and reference work are shared through the caches, and a finished point is skipped on a
re-run. The plot shows a metric of each point's trained model against the sample count, one
line per method (the paper's Figure: win rate against sample count).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clo_recipes.errors import CloError

from .compare import relative_metrics
from .report import fmt_share, headline

# `--grid method=clo,sft` means the method's name (a section cannot be set to a string).
ALIASES = {"method": "method.name"}
METRIC_LABELS = {
    "win": "judge win rate, target-language prompts", "win_en": "judge win rate, English prompts",
    "fidelity": "answers in the target language", "fidelity_en": "answers in English to English prompts",
    "mc": "multiple-choice accuracy, target language", "mc_en": "multiple-choice accuracy, English",
}


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """`["method.name=clo,sft", "data.samples=800,1600"]` -> `[("method.name", ["clo", "sft"]), ...]`."""
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        options = [value.strip() for value in values.split(",") if value.strip()]
        if not sep or not key or not options:
            raise CloError(f"bad --grid {spec!r}", hint="write --grid FIELD=V1,V2,..., e.g. --grid data.samples=800,1600")
        if any(key == existing for existing, _ in axes):
            raise CloError(f"--grid names {key} twice", hint="give all values of one field in one --grid")
        axes.append((key, list(dict.fromkeys(options))))
    if not axes:
        raise CloError("a sweep needs at least one --grid")
    return axes


def expand_grid(axes: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """Every combination, the first axis varying slowest."""
    keys = [key for key, _ in axes]
    return [dict(zip(keys, values)) for values in itertools.product(*(values for _, values in axes))]


def point_name(base: str, point: dict[str, str]) -> str:
    """`thai-llama` + `{method.name: sft+dpo, data.samples: 800}` -> `thai-llama-sft-dpo-800`."""
    parts = [re.sub(r"[^A-Za-z0-9._]+", "-", value).strip("-") for value in point.values()]
    return "-".join([base, *parts])[:100]


def point_overrides(base: str, point: dict[str, str], extra: list[str] = ()) -> list[str]:
    return [*extra, *(f"{key}={value}" for key, value in point.items()), f"name={point_name(base, point)}"]


@dataclass
class SweepPoint:
    point: dict[str, str]
    name: str
    run_dir: Path | None
    model: str | None  # the point's trained model label
    metrics: dict[str, Any]  # relative metric names (see compare.relative_metrics)
    error: str | None = None


def point_result(point: dict[str, str], name: str, run_dir: Path) -> SweepPoint:
    """Read a finished point's report: the metrics of its trained model (its method)."""
    from .runs import load_run

    run = load_run(run_dir)
    if run.report is None:
        return SweepPoint(point, name, run_dir, None, {}, "no finished report")
    label = run.main_model()
    row = headline(run.report).get(label, {})
    return SweepPoint(point, name, run_dir, label, relative_metrics(row, run.language))


def run_sweep(recipe: Path, axes: list[tuple[str, list[str]]], *, base_name: str, extra: list[str] = (),
              runner: Callable | None = None, console=None) -> list[SweepPoint]:
    """Run every grid point in order through the engine (`run_recipe_file`). A failed point is
    recorded with its error and the sweep goes on; the plot then shows the others."""
    if runner is None:
        from clo_recipes.engine.run import run_recipe_file as runner
    results = []
    for index, point in enumerate(expand_grid(axes), start=1):
        name = point_name(base_name, point)
        if console is not None:
            console.rule(f"sweep {index}: {name}  ({', '.join(f'{k}={v}' for k, v in point.items())})")
        try:
            outcome = runner(recipe, point_overrides(base_name, point, list(extra)), console=console)
        except CloError as error:
            results.append(SweepPoint(point, name, None, None, {}, error.render()))
            continue
        if not getattr(outcome, "ok", True):
            failed = [o.id for o in outcome.outcomes if o.status not in ("ran", "cached", "skipped")]
            results.append(SweepPoint(point, name, outcome.run_dir, None, {}, f"stages not finished: {failed}"))
            continue
        results.append(point_result(point, name, outcome.run_dir))
    return results


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
    """(x axis, line axis): `data.samples` (or the first all-numeric axis) against the method
    (or the first other axis)."""
    keys = [key for key, _ in axes]
    numeric = [key for key, values in axes if all(v.replace(".", "", 1).isdigit() for v in values)]
    x_key = "data.samples" if "data.samples" in keys else (numeric[0] if numeric else keys[0])
    others = [key for key in keys if key != x_key]
    line_key = "method.name" if "method.name" in others else (others[0] if others else None)
    return x_key, line_key


def efficiency_lines(points: list[SweepPoint], metric: str, x_key: str, line_key: str | None) -> dict[str, list]:
    lines: dict[str, list] = {}
    for point in points:
        stats = point.metrics.get(metric)
        if stats is None or x_key not in point.point:
            continue
        label = point.point.get(line_key, "run") if line_key else "run"
        lines.setdefault(label, []).append((float(point.point[x_key]), (stats["value"], stats["low"], stats["high"])))
    return lines


def sweep_table_rows(points: list[SweepPoint], metric: str) -> tuple[list[str], list[list[str]]]:
    keys = list(points[0].point) if points else []
    header = [*keys, "run", metric, "n"]
    rows = []
    for point in points:
        stats = point.metrics.get(metric)
        value = fmt_share(stats) if stats else (f"failed: {point.error.splitlines()[0]}" if point.error else "–")
        rows.append([*point.point.values(), point.name, value, str(stats.get("n", "–")) if stats else "–"])
    return header, rows


def write_sweep(points: list[SweepPoint], axes: list[tuple[str, list[str]]], metric: str, folder: Path,
                title: str) -> list[Path]:
    """sweep.json, sweep.md and data_efficiency.png."""
    from .plots import line_plot

    folder.mkdir(parents=True, exist_ok=True)
    x_key, line_key = axis_keys(axes)
    document = {"metric": metric, "x": x_key, "lines": line_key,
                "points": [{"point": p.point, "name": p.name, "run_dir": str(p.run_dir) if p.run_dir else None,
                            "model": p.model, "metrics": p.metrics, "error": p.error} for p in points]}
    (folder / "sweep.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    header, rows = sweep_table_rows(points, metric)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    (folder / "sweep.md").write_text(f"# {title}\n\n{METRIC_LABELS.get(metric, metric)}, % [95% interval]\n\n"
                                     + "\n".join(table) + "\n", encoding="utf-8")
    written = [folder / "sweep.json", folder / "sweep.md"]
    numeric_x = all(v.replace(".", "", 1).isdigit() for key, values in axes if key == x_key for v in values)
    lines = efficiency_lines(points, metric, x_key, line_key) if numeric_x else {}
    if lines:  # a metric-against-count plot needs a numeric axis
        written.append(line_plot(folder / "data_efficiency.png", title=title, lines=lines,
                                 xlabel="training samples" if x_key == "data.samples" else x_key,
                                 ylabel=METRIC_LABELS.get(metric, metric)))
    return written
