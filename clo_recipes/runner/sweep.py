"""`clo-recipe sweep`: run a grid of recipe overrides through the door, one run per point.

`--grid method.name=clo,sft --grid data.samples=800,1600` expands to the four combinations
(or a sweep file names the recipe, the grid and the metrics, see `load_sweep_file`); each
point runs as its own run (named `<name>-clo-800`, ...) through `runner.door`, so `--profile`,
`--set`, a lock file's pins and the memory check mean what they mean for `run` (a lock
holds every field but the grid's axes and the run name). Points run largest sample count
first, and finished stages are reused across points (`engine/reuse.py`): a stage with the
same fingerprint in another point's run is linked over, and the data stages, reference
log-probs and base-model evaluation of a smaller point are sliced from the largest point,
since sampling is nested. A finished point is skipped, an interrupted one resumes. The
tables and plots are `evaluation/sweep.py`'s.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CloError
from ..evaluation.sweep import METRIC_LABELS, SweepPoint, point_result
from .shipped import find_shipped, is_shipped_name, shipped_names

# `--grid method=clo,sft` means the method's name (a section cannot be set to a string).
ALIASES = {"method": "method.name"}


def sweep_target(target: str | Path) -> Path | str:
    """A sweep file or recipe that exists here, else a shipped sweep of that name, else the
    target as the door reads it (a shipped recipe's name, say)."""
    path = Path(str(target)).expanduser()
    if path.exists() or not is_shipped_name(str(target)):
        return path
    name = str(target).split(":", 1)[-1].rsplit(".", 1)[0]
    return find_shipped(name, "sweeps") if name in shipped_names("sweeps") else str(target)


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


@dataclass
class SweepFile:
    recipe: Path
    grid: list[str]  # `FIELD=V1,V2` specs, as on the command line
    overrides: list[str]
    metrics: list[str]
    out: Path | None


def load_sweep_file(path: Path) -> SweepFile:
    """A sweep file: `recipe:` (relative to the file), `grid: {field: [values]}`, optional
    `set: {field: value}` for every point, `metrics: [...]` and `out:`."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CloError(f"{path} is not valid YAML: {error}") from None
    hint = "a sweep file has `recipe: <file>`, `grid: {data.samples: [32, 64]}` and optionally `set:`, `metrics:`, `out:`"
    unknown = set(data) - {"recipe", "grid", "set", "metrics", "out"} if isinstance(data, dict) else set()
    if not isinstance(data, dict) or not data.get("recipe") or not isinstance(data.get("grid"), dict) or unknown:
        raise CloError(f"{path} is not a sweep file" + (f" (unknown keys: {', '.join(sorted(unknown))})" if unknown else ""),
                       hint=hint)
    base = Path(path).parent
    grid = [f"{key}=" + ",".join(str(v) for v in (values if isinstance(values, list) else [values]))
            for key, values in data["grid"].items()]
    overrides = [f"{key}={json.dumps(value)}" for key, value in (data.get("set") or {}).items()]
    metrics = data.get("metrics") or []
    for metric in metrics:
        if metric not in METRIC_LABELS:
            raise CloError(f"{path}: unknown sweep metric '{metric}'", hint=f"choose from {', '.join(METRIC_LABELS)}")
    out = base / data["out"] if data.get("out") else None
    return SweepFile(base / data["recipe"], grid, overrides, list(metrics), out)


def is_sweep_file(path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "grid" in data and "recipe" in data


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


def run_order(points: list[dict[str, str]]) -> list[int]:
    """Indices of the points, largest `data.samples` first (so smaller points can be sliced
    from it), grid order otherwise."""
    def size(index: int) -> float:
        value = points[index].get("data.samples")
        return -float(value) if value is not None else 0.0

    return sorted(range(len(points)), key=lambda index: (size(index), index))


def run_sweep(recipe: Path | str, axes: list[tuple[str, list[str]]], *, base_name: str, extra: list[str] = (),
              runner: Callable | None = None, console=None, reuse: bool = True, profile: str | None = None,
              on_point: Callable[[list[SweepPoint]], None] | None = None) -> list[SweepPoint]:
    """Every grid point through the door, in grid order in the result. A failed point is
    recorded with its error and the sweep goes on. `runner(recipe, overrides, console=)`
    replaces the engine (tests); `on_point(results so far)` hears of each finished point."""
    points = expand_grid(axes)
    if runner is not None:
        results = []
        for point in points:
            results.append(_run_with_runner(recipe, point, base_name, list(extra), runner, console))
            if on_point:
                on_point(results)
        return results
    return _run_with_engine(recipe, points, base_name=base_name, extra=list(extra), console=console, reuse=reuse,
                            profile=profile, on_point=on_point)


def _run_with_runner(recipe, point, base_name, extra, runner, console) -> SweepPoint:
    name = point_name(base_name, point)
    try:
        outcome = runner(recipe, point_overrides(base_name, point, extra), console=console)
    except CloError as error:
        return SweepPoint(point, name, None, None, {}, error.render())
    if not getattr(outcome, "ok", True):
        failed = [o.id for o in outcome.outcomes if o.status not in ("ran", "cached", "skipped")]
        return SweepPoint(point, name, outcome.run_dir, None, {}, f"stages not finished: {failed}")
    return point_result(point, name, outcome.run_dir)


def _run_with_engine(recipe: Path | str, points: list[dict[str, str]], *, base_name: str, extra: list[str], console,
                     reuse: bool, profile: str | None, on_point) -> list[SweepPoint]:
    from ..engine.reuse import reuse_stages
    from . import door

    def prepare(point: dict[str, str]) -> door.Prepared:
        # the grid's fields and the point's name differ from a lock on purpose; all else is held
        return door.prepare(recipe, point_overrides(base_name, point, extra), profile=profile,
                            varied=(*point, "name"))

    pool = [prepare(point).plan.run_dir for point in points]  # every point's run folder, for reuse
    sizes = [float(p["data.samples"]) for p in points if "data.samples" in p]
    largest = max(sizes) if sizes else None
    results: dict[int, SweepPoint] = {}
    for step, index in enumerate(run_order(points), start=1):
        point, name = points[index], point_name(base_name, points[index])
        if console is not None:
            console.rule(f"sweep {step}/{len(points)}: {name}  ({', '.join(f'{k}={v}' for k, v in point.items())})")
        stages: dict[str, dict] = {}
        try:
            prepared = prepare(point)
            plan = prepared.plan
            if all(stage.status == "done" for stage in plan.stages):
                if console is not None:
                    console.print("[green]✓ point finished earlier, skipped[/]")
                results[index] = point_result(point, name, plan.run_dir)
                results[index].stages = {s.id: {"status": "cached", "seconds": 0.0} for s in plan.stages}
                _tell(on_point, results, points)
                continue
            donor = None
            if reuse and largest is not None and float(point["data.samples"]) != largest:
                donor = prepare({**point, "data.samples": _number(largest)}).plan
            outcomes = []
            if reuse:  # data stages first, then what needs the (run) pairs stage
                stages.update(_reused(reuse_stages(plan, pool=pool, donor=donor), console))
                if any(s.kind == "pairs" and s.status != "done" for s in plan.stages) and \
                        plan.stage("translate").status == "done":
                    outcomes += door.run(prepared, only=["pairs"], console=console).outcomes
                    stages.update(_reused(reuse_stages(plan, pool=pool, donor=donor), console))
            result = door.run(prepared, console=console)
        except CloError as error:
            results[index] = SweepPoint(point, name, None, None, {}, error.render(), stages)
            _tell(on_point, results, points)
            continue
        for outcome in [*outcomes, *result.outcomes]:
            if outcome.status == "ran" or outcome.id not in stages:
                stages[outcome.id] = {"status": outcome.status, "seconds": round(outcome.seconds, 3)}
        if not result.ok:
            failed = [o.id for o in result.outcomes if o.status not in ("ran", "cached", "skipped")]
            results[index] = SweepPoint(point, name, result.run_dir, None, {}, f"stages not finished: {failed}", stages)
        else:
            results[index] = point_result(point, name, result.run_dir)
            results[index].stages = stages
        _tell(on_point, results, points)
    return [results[index] for index in range(len(points))]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _reused(entries: list[dict], console) -> dict[str, dict]:
    found = {}
    for entry in entries:
        if console is not None:
            console.print(f"[green]✓ {entry['stage']}[/] reused ({entry['how']}) [dim]{entry['from']}[/]")
        found[entry["stage"]] = {"status": "reused", "how": entry["how"], "seconds": 0.0,
                                 "avoided_s": round(entry.get("original_seconds", 0.0), 3)}
    return found


def _tell(on_point, results: dict[int, SweepPoint], points: list) -> None:
    if on_point is not None:
        on_point([results[i] for i in range(len(points)) if i in results])
