"""`clo-recipe compare` and `clo-recipe sweep`: results across runs."""

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
) -> None:
    """One paper-style table across runs: model x language x metric (and win rates vs a baseline run)."""
    from rich.console import Console

    from clo_recipes.chat_endpoint import is_loopback
    from clo_recipes.evaluation.compare import collect, judge_against_baseline, rich_table, write_comparison
    from clo_recipes.evaluation.judge import JudgeUnavailable
    from clo_recipes.evaluation.runs import load_run

    console = Console()
    runs = [load_run(path) for path in run_dirs]
    comparison = collect(runs)
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
    written = write_comparison(comparison, out)
    console.print("Wrote " + ", ".join(str(path) for path in written))


def sweep(
    file: Path = typer.Argument(..., help="Recipe file every grid point starts from."),
    grid: List[str] = typer.Option(..., "--grid", help="FIELD=V1,V2,... (repeatable), e.g. --grid data.samples=800,1600"),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override for every point (repeatable)."),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="win, win_en, fidelity, fidelity_en, mc, mc_en (default: win if judged, else fidelity)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the plot and table (default <output_dir>/<name>-sweep)."),
) -> None:
    """Run a grid of recipe variants and plot a metric against sample count, one line per method."""
    from rich.console import Console
    from rich.table import Table

    from clo_recipes.evaluation.sweep import (
        choose_metric, expand_grid, parse_grid, point_overrides, run_sweep, sweep_table_rows, write_sweep)
    from clo_recipes.recipe.load import load_recipe

    console = Console()
    axes = parse_grid(grid)
    recipe = load_recipe(file, overrides or []).recipe
    for point in expand_grid(axes):  # a misspelt field or value fails now, not after hours of runs
        load_recipe(file, point_overrides(recipe.name, point, overrides or []))
    if metric is not None:
        choose_metric([], metric)
    points = run_sweep(file, axes, base_name=recipe.name, extra=overrides or [], console=console)
    chosen = choose_metric(points, metric)
    header, rows = sweep_table_rows(points, chosen)
    table = Table(title=f"sweep {recipe.name}: {chosen}", title_justify="left")
    for column in header:
        table.add_column(column, justify="right" if column in (chosen, "n") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    folder = out or Path(recipe.output_dir).expanduser() / f"{recipe.name}-sweep"
    written = write_sweep(points, axes, chosen, folder, title=f"{recipe.name}: {chosen} against training samples")
    console.print("Wrote " + ", ".join(str(path) for path in written))
    if any(point.error for point in points):
        raise typer.Exit(1)


def _shared_cache() -> Path:
    configured = os.environ.get("CLO_RECIPES_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "clo-recipes"
