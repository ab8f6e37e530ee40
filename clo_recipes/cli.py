"""`clo-recipe`: a thin typer app. It parses arguments, calls the engine and renders with rich.

Start-up stays fast: nothing here imports torch or transformers; stages import them when
they run. User errors (`CloError`) print as one short screen, never as a traceback
(`--debug` shows it).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

# pydantic scans every installed package's entry points for plugins at first model build
# (~0.1 s); this CLI uses none, and start-up time is a feature.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from .errors import CloError  # noqa: E402

app = typer.Typer(
    name="clo-recipe",
    help="Cross-Lingual Optimization recipes: validate, plan and run language-transfer runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

SetOption = typer.Option(None, "--set", help="Override a field: --set train.learning_rate=2e-5 (repeatable).")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors.")) -> None:
    _state["debug"] = debug


# --------------------------------------------------------------------------- validate
@app.command()
def validate(
    files: List[str] = typer.Argument(..., help="Recipe files (or lock files, bundles, shipped names) to check."),
    overrides: Optional[List[str]] = SetOption,
) -> None:
    """Check recipes statically (schema, values, references); exit 1 if any is invalid.
    FILE may be a recipe, a lock file, a bundle folder or a shipped recipe's name."""
    from .commands.check import check_files

    code = check_files(files, overrides or [])
    if code:
        raise typer.Exit(code)


# --------------------------------------------------------------------------- plan
def _plan_dict(prepared, estimate) -> dict:
    from .engine.run import resolved_document

    plan = prepared.plan
    doc = resolved_document(plan.resolved)
    doc["run_dir"] = str(plan.run_dir)
    doc["stages"] = [
        {"id": s.id, "kind": s.kind, "arm": s.arm, "deps": s.deps, "fingerprint": s.fingerprint,
         "status": s.status, "dir": str(plan.stage_dir(s))}
        for s in plan.stages
    ]
    doc["notes"] = plan.notes
    if estimate is not None:
        doc["memory"] = {"total_gb": round(estimate.total_gb, 2), "fits": estimate.fits,
                         "largest": estimate.largest, "breakdown": estimate.breakdown,
                         "suggestion": estimate.suggestion, "notes": estimate.notes}
    if prepared.opened.lock is not None:
        doc["lock"] = {"file": str(prepared.opened.lock.path),
                       "differences": [{"field": d.field, "locked": d.locked, "now": d.now, "blocking": d.blocking}
                                       for d in prepared.differences]}
    return doc


def _print_plan(plan, estimate, show_values: bool = True) -> None:
    resolved = plan.resolved
    if show_values:
        values = Table(title=f"Resolved recipe: {resolved.recipe.name}", show_lines=False, expand=False)
        values.add_column("field", style="cyan")
        values.add_column("value", overflow="fold")
        values.add_column("from", style="dim")
        flat = resolved.provenance
        dump = resolved.recipe.model_dump(mode="json")
        for dotted, origin in flat.items():
            value = dump
            for part in dotted.split("."):
                value = value.get(part) if isinstance(value, dict) else value
            values.add_row(dotted, json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value,
                           origin)
        console.print(values)
    stages = Table(title=f"Stages → {plan.run_dir}")
    for column in ("stage", "status", "fingerprint", "after"):
        stages.add_column(column)
    colors = {"done": "green", "partial": "yellow", "pending": "white"}
    for stage in plan.stages:
        label = {"done": "done", "partial": "partial (resumes)", "pending": "to run"}[stage.status]
        stages.add_row(stage.id, f"[{colors[stage.status]}]{label}[/]", stage.fingerprint[:12], ", ".join(stage.deps))
    console.print(stages)
    for note in plan.notes:  # what the stages' checks say without refusing
        console.print(f"note: {note}", markup=False)
    if estimate is not None:
        color = "green" if estimate.fits else "red"
        console.print(f"[{color}]Memory per GPU ≈ {estimate.total_gb:.1f} GiB: "
                      f"{'fits' if estimate.fits else 'does NOT fit'}[/] (largest: {estimate.largest})"
                      + (f"\n  suggestion: {estimate.suggestion}" if estimate.suggestion else ""))
        parts = ", ".join(f"{name} {gib:.2f}" for name, gib in estimate.breakdown.items())
        console.print(f"  GiB: {parts}" + "".join(f"\n  {note}" for note in estimate.notes))


@app.command()
def plan(
    file: Path = typer.Argument(..., help="Recipe file."),
    overrides: Optional[List[str]] = SetOption,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Use this hardware profile instead."),
) -> None:
    """Show the resolved recipe (each value with where it came from), the stage graph and,
    for a lock file, what differs from its pins (what `run` would refuse)."""
    from .runner.door import memory_estimate, prepare

    prepared = prepare(file, overrides or [], profile=profile, dry_run=True, strict=False)
    estimate = memory_estimate(prepared.plan)
    if as_json:
        print(json.dumps(_plan_dict(prepared, estimate), indent=2, ensure_ascii=False))
        return
    _print_plan(prepared.plan, estimate)
    _print_lock_check(prepared)


def _print_lock_check(prepared) -> None:
    lock = prepared.opened.lock
    if lock is None:
        return
    refused = [d for d in prepared.differences if d.blocking]
    if not refused:
        console.print(f"[green]✓[/] matches its lock {lock.path.name}")
        return
    console.print(f"[red]run would refuse[/]: {len(refused)} pinned item(s) differ from {lock.path.name} "
                  "(pass --relock to `run` to re-pin them)")
    for difference in refused:
        console.print(f"  ✗ {difference.render()}", markup=False, highlight=False)


# --------------------------------------------------------------------------- run
def _summary(result) -> Table:
    table = Table(title=f"Run summary: {result.run_dir}")
    for column in ("stage", "status", "time", "outputs"):
        table.add_column(column)
    for outcome in result.outcomes:
        shown = ", ".join(f"{k}={v}" for k, v in list(outcome.outputs.items())[:4]
                          if isinstance(v, (int, float, str)) and len(str(v)) < 40)
        color = {"ran": "green", "cached": "cyan", "skipped": "dim"}.get(outcome.status, "red")
        table.add_row(outcome.id, f"[{color}]{outcome.status}[/]",
                      f"{outcome.seconds:.1f}s" if outcome.seconds else "", shown)
    return table


def _print_report(result) -> None:
    """The evaluation summary of this run's report stage (the one this plan names)."""
    report = next((o.directory for o in result.outcomes if o.id == "report" and o.directory), None)
    if report is None or not (report / "report.json").exists():
        return
    from .evaluation.summary import summary_table

    console.print(summary_table(json.loads((report / "report.json").read_text(encoding="utf-8"))))
    console.print(f"Report: {report / 'report.md'}")


@app.command()
def run(
    file: Path = typer.Argument(..., help="Recipe file."),
    overrides: Optional[List[str]] = SetOption,
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this stage (id or kind; repeatable)."),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Redo this stage and everything after it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would run (and launch commands), run nothing."),
    force: bool = typer.Option(False, "--force", help="Redo selected stages even if done; run even if memory says no."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Use this hardware profile instead."),
    no_launch: bool = typer.Option(False, "--no-launch", hidden=True, help="Already inside a multi-GPU launcher."),
    relock: bool = typer.Option(False, "--relock", help="FILE is a lock whose pins differ: re-pin it to what is here now, then run."),
    from_bundle: Optional[Path] = typer.Option(None, "--from-bundle", help="Reuse the data stages of a bundle from `clo-recipe export`."),
) -> None:
    """Run the recipe's stages in order; finished stages are skipped, interrupted ones resume.
    FILE may be a recipe, a lock file, a bundle folder or a shipped recipe's name."""
    from .engine.run import select_stages
    from .runner import door

    prepared = door.prepare(file, overrides or [], profile=profile, relock=relock, from_bundle=from_bundle,
                            dry_run=dry_run, console=console)
    if dry_run:
        the_plan = prepared.plan
        _print_plan(the_plan, door.memory_estimate(the_plan), show_values=False)
        chosen, redo = select_stages(the_plan, only, from_stage)
        todo = [s.id for s in the_plan.stages if s.id in chosen and (s.status != "done" or s.id in redo or force)]
        console.print(f"Would run: {', '.join(todo) or 'nothing (all done)'}")
        launcher = None if no_launch else door.launcher_for(prepared)
        if launcher is not None:
            launcher.describe(console)
        return
    result = door.run(prepared, only=only, from_stage=from_stage, force=force, console=console,
                      launch=not no_launch)
    console.print(_summary(result))
    _print_report(result)


# --------------------------------------------------------------------------- schema
SCHEMA_PATH = Path("schemas/recipe.schema.json")
REFERENCE_PATH = Path("docs/recipe-reference.md")


@app.command()
def schema(
    output: Path = typer.Option(SCHEMA_PATH, "--output", "-o", help="Where to write the JSON schema."),
    reference: Path = typer.Option(REFERENCE_PATH, "--reference", help="Where to write the Markdown field reference."),
    check: bool = typer.Option(False, "--check", help="Exit 1 if the files are not up to date."),
) -> None:
    """Write the recipe JSON schema (editor completion via yaml-language-server) and the
    Markdown field reference, both generated from the pydantic models."""
    from .recipe.json_schema import recipe_json_schema_text, recipe_reference_markdown

    files = {output: recipe_json_schema_text(), reference: recipe_reference_markdown()}
    if check:
        stale = [path for path, text in files.items()
                 if (path.read_text(encoding="utf-8") if path.exists() else "") != text]
        if stale:
            err_console.print(f"[red]out of date: {', '.join(map(str, stale))}[/]; run `clo-recipe schema`")
            raise typer.Exit(1)
        console.print("schema and reference are up to date")
        return
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        console.print(f"wrote {path}")


# --------------------------------------------------------------------------- wiring
def _register_command_modules() -> None:
    from .commands import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(f".commands.{name}", __package__).register(app)


_register_command_modules()


def main() -> None:
    from .files import disk_error

    try:
        try:
            app()
        except OSError as exc:  # a full or read-only disk outside a stage: one screen too
            raise disk_error(exc) from None
    except CloError as exc:
        if _state["debug"]:
            raise
        err_console.print("[bold red]error[/]")
        err_console.print(exc.render(), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished stages are kept; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
