"""`clo-recipe compare` and `clo-recipe sweep`: results across runs (a sweep runs them first,
through the door: `runner/sweep.py`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("sweep")(sweep)


def compare(
    run_dirs: List[Path] = typer.Argument(..., help="Run directories (runs/<name>/) with finished evaluations."),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", help="Judge every other run's trained model against this run's trained model."),
    judge_endpoint: Optional[str] = typer.Option(
        None, "--judge-endpoint", help="OpenAI-compatible judge URL (default: the baseline run's eval.judge.endpoint)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model (default: the baseline run's)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Env var with the judge's API key."),
    out: Path = typer.Option(Path("comparison"), "--out", "-o", help="Folder for compare.md/.json and plots."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Judge verdict cache (default: the shared cache)."),
    per_seed: bool = typer.Option(False, "--per-seed", help="One row per run, instead of one per configuration "
                                  "averaged over runs that differ only in train.seed / data.seed."),
    html: Optional[Path] = typer.Option(None, "--html", help="Where to write the self-contained HTML page "
                                        "(default: <out>/compare.html); it links each run's report.html."),
) -> None:
    """One paper-style table across runs: model x language x metric (and win rates vs a baseline run)."""
    from rich.console import Console

    from clo_recipes.chat_endpoint import is_loopback
    from clo_recipes.evaluation.compare import collect, judge_against_baseline, rich_table, write_comparison
    from clo_recipes.evaluation.judge import JudgeUnavailable
    from clo_recipes.evaluation.runs import load_run

    console = Console()
    runs = [load_run(path) for path in run_dirs]
    comparison = collect(runs, aggregate_seeds=not per_seed and baseline is None)  # judging pairs single runs
    if baseline is not None:
        base_run = next((run for run in runs if run.run_dir == baseline.expanduser().resolve()), None) or load_run(baseline)
        settings = (base_run.recipe.get("eval") or {}).get("judge") or {}
        endpoint = judge_endpoint or settings.get("endpoint")
        model = judge_model or settings.get("model")
        key_env = api_key_env or settings.get("api_key_env") or "OPENAI_API_KEY"
        api_key = os.environ.get(key_env)
        if not endpoint or not model:
            comparison.notes.append("win rates vs the baseline run skipped: no judge configured "
                                    "(--judge-endpoint and --judge-model, or eval.judge in the baseline's recipe)")
        elif not api_key and not is_loopback(endpoint):
            comparison.notes.append(f"win rates vs the baseline run skipped: API key missing (${key_env} is not set)")
        else:
            try:
                judge_against_baseline(comparison, runs, base_run, endpoint=endpoint, model=model, api_key=api_key,
                                       cache_dir=cache_dir or _shared_cache(),
                                       concurrency=int(settings.get("concurrency") or 4),
                                       timeout_s=float(settings.get("timeout_s") or 120.0))
            except JudgeUnavailable as error:
                comparison.notes.append(f"win rates vs the baseline run skipped: {error}")
    console.print(rich_table(comparison))
    written = write_comparison(comparison, out, runs, html)
    console.print("Wrote " + ", ".join(str(path) for path in written))


def sweep(
    file: str = typer.Argument(..., help="A sweep file (recipe, grid, metrics) or a shipped sweep's name, or the "
                                         "recipe every grid point starts from (a file, lock, bundle or shipped name)."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="FIELD=V1,V2,... (repeatable), e.g. --grid data.samples=800,1600"),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override for every point (repeatable)."),
    metric: Optional[List[str]] = typer.Option(
        None, "--metric", help="win, win_en, fidelity, fidelity_en, mc, mc_en, nll, nll_en (repeatable; "
                               "default: the sweep file's, else win if judged, else fidelity)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the plots and table (default <output_dir>/<name>-sweep)."),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help="Reuse and slice finished stages across points."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Use this hardware profile for every point."),
) -> None:
    """Run a grid of recipe variants and plot metrics against sample count, one line per method."""
    from rich.console import Console
    from rich.table import Table

    from clo_recipes.errors import CloError
    from clo_recipes.evaluation.sweep import choose_metric, sweep_table_rows, write_sweep
    from clo_recipes.runner.sweep import (
        expand_grid, is_sweep_file, load_sweep_file, parse_grid, point_overrides, run_sweep, sweep_target)
    from clo_recipes.runner.target import open_target

    console = Console()
    specs, extra, metrics = list(grid or []), list(overrides or []), list(metric or [])
    file = sweep_target(file)
    if isinstance(file, Path) and file.is_file() and is_sweep_file(file):
        spec = load_sweep_file(file)
        given = {item.partition("=")[0].strip() for item in specs}
        specs = [item for item in spec.grid if item.partition("=")[0] not in given] + specs
        file, extra, metrics = spec.recipe, spec.overrides + extra, metrics or spec.metrics
        out = out or spec.out
    elif not specs:
        raise CloError(f"{file} is a recipe, so the sweep needs at least one --grid",
                       hint="add --grid data.samples=800,1600, or pass a sweep file (recipes/sweeps/)")
    axes = parse_grid(specs)
    recipe = open_target(file, extra).loaded.recipe
    for point in expand_grid(axes):  # a misspelt field or value fails now, not after hours of runs
        open_target(file, point_overrides(recipe.name, point, extra))
    for wanted in metrics:
        choose_metric([], wanted)
    folder = out or Path(recipe.output_dir).expanduser() / f"{recipe.name}-sweep"
    title = f"{recipe.name}: against training samples"

    def chosen_metrics(points) -> list[str]:
        return metrics or [choose_metric(points, None)]

    def save(points) -> None:  # after every point, so an interrupted sweep still shows what it has
        write_sweep(points, axes, chosen_metrics(points), folder, title=title)

    points = run_sweep(file, axes, base_name=recipe.name, extra=extra, console=console, reuse=reuse,
                       profile=profile, on_point=save)
    chosen = chosen_metrics(points)
    header, rows = sweep_table_rows(points, chosen[0])
    table = Table(title=f"sweep {recipe.name}: {chosen[0]}", title_justify="left")
    for column in header:
        table.add_column(column, justify="right" if column in (chosen[0], "n") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    written = write_sweep(points, axes, chosen, folder, title=title)
    console.print("Wrote " + ", ".join(str(path) for path in written))
    if any(point.error for point in points):
        raise typer.Exit(1)


def _shared_cache() -> Path:
    configured = os.environ.get("CLO_RECIPES_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "clo-recipes"
