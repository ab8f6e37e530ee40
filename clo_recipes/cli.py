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
    files: List[Path] = typer.Argument(..., help="Recipe files to check."),
    overrides: Optional[List[str]] = SetOption,
) -> None:
    """Check recipes statically (schema, values, references); exit 1 if any is invalid."""
    from .share.lockfile import load_any

    failed = 0
    for file in files:
        try:
            loaded, _ = load_any(file, overrides or [])
        except CloError as exc:
            failed += 1
            err_console.print(f"[bold red]✗ {file}[/]")
            err_console.print(exc.render(), markup=False, highlight=False, soft_wrap=True)
            continue
        recipe = loaded.recipe
        arms = ", ".join([recipe.method.name, *recipe.method.baselines])
        console.print(f"[bold green]✓ {file}[/]  {recipe.name}: {recipe.model.base} → {recipe.language} ({arms})")
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- plan
def _load_plan(file: Path, overrides: list[str], profile: str | None = None):
    from .engine.plan import make_plan
    from .recipe.resolve import resolve
    from .share.lockfile import load_any  # a recipe or a lock file

    return make_plan(resolve(load_any(file, overrides)[0], profile_override=profile))


def _memory_estimate(plan):
    """The hardware subsystem's fit check, or None when it cannot tell (e.g. config unknown offline)."""
    try:
        from .hardware.memory import check_fit
    except ImportError:
        return None
    return check_fit(plan.resolved.recipe)


def _plan_dict(plan, estimate) -> dict:
    from .engine.run import resolved_document

    doc = resolved_document(plan.resolved)
    doc["run_dir"] = str(plan.run_dir)
    doc["stages"] = [
        {"id": s.id, "kind": s.kind, "arm": s.arm, "deps": s.deps, "fingerprint": s.fingerprint,
         "status": s.status, "dir": str(plan.stage_dir(s))}
        for s in plan.stages
    ]
    if estimate is not None:
        doc["memory"] = {"total_gb": round(estimate.total_gb, 2), "fits": estimate.fits,
                         "largest": estimate.largest, "breakdown": estimate.breakdown,
                         "suggestion": estimate.suggestion, "notes": estimate.notes}
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
    """Show the resolved recipe (each value with where it came from) and the stage graph."""
    the_plan = _load_plan(file, overrides or [], profile)
    estimate = _memory_estimate(the_plan)
    if as_json:
        print(json.dumps(_plan_dict(the_plan, estimate), indent=2, ensure_ascii=False))
    else:
        _print_plan(the_plan, estimate)


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
    """Run the recipe's stages in order; finished stages are skipped, interrupted ones resume."""
    from .engine.run import execute, select_stages
    from .share.runner import plan_for_run

    the_plan = plan_for_run(file, overrides or [], profile=profile, relock=relock, from_bundle=from_bundle,
                            dry_run=dry_run, console=console)
    estimate = _memory_estimate(the_plan)
    launcher = _launcher(the_plan, file, overrides or [], no_launch, profile)
    if dry_run:
        _print_plan(the_plan, estimate, show_values=False)
        chosen, redo = select_stages(the_plan, only, from_stage)
        todo = [s.id for s in the_plan.stages if s.id in chosen and (s.status != "done" or s.id in redo or force)]
        console.print(f"Would run: {', '.join(todo) or 'nothing (all done)'}")
        if launcher is not None:
            launcher.describe(console)
        return
    if estimate is not None and not estimate.fits and not force:
        raise CloError(f"this run needs about {estimate.total_gb:.1f} GiB per GPU and does not fit "
                       f"(largest: {estimate.largest})",
                       hint=(estimate.suggestion or "") + " — or pass --force to try anyway")
    result = execute(the_plan, only=only, from_stage=from_stage, force=force, console=console,
                     launcher=launcher)
    console.print(_summary(result))
    _print_report(result)


def _launcher(the_plan, file: Path, overrides: list[str], no_launch: bool, profile: str | None = None):
    """Multi-GPU/multi-node: training stages go through `accelerate launch` (hardware subsystem)."""
    if no_launch:
        return None
    try:
        from .hardware.launch import Launcher
    except ImportError:
        return None
    return Launcher.for_plan(the_plan, file, overrides, profile=profile)


# --------------------------------------------------------------------------- schema / init
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


@app.command()
def init(
    output: Path = typer.Argument(Path("recipe.yaml"), help="Recipe file to write."),
    model: str = typer.Option("meta-llama/Meta-Llama-3-8B-Instruct", help="Base model (hub id, folder, .gguf, pypi:<pkg>)."),
    language: str = typer.Option("th", help="Target language (ISO code or English name)."),
    method: str = typer.Option("clo", help="clo, sft or sft+dpo."),
    adapter: str = typer.Option("full", help="full, lora or qlora."),
    hardware: str = typer.Option("auto", help="Hardware profile."),
    samples: int = typer.Option(3200, help="English samples to translate and train on."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a starter recipe from a few flags, then validate it."""
    from .recipe.init_template import STARTER
    from .recipe.languages import get_language
    from .recipe.load import load_recipe

    if output.exists() and not force:
        raise CloError(f"{output} exists", hint="pass --force to overwrite, or choose another file name")
    code = get_language(language).iso1
    name = f"{code}-{Path(model).name.lower().replace('_', '-')}-{method.replace('+', '-')}"[:100]
    schema_file = Path.cwd() / SCHEMA_PATH
    schema_ref = os.path.relpath(schema_file, output.resolve().parent) if schema_file.exists() else str(SCHEMA_PATH)
    text = STARTER.format(schema=schema_ref, path=output, name=name, model=model, language=code, method=method,
                          baselines="sft" if method == "clo" else "", adapter=adapter, hardware=hardware,
                          samples=samples)
    output.write_text(text, encoding="utf-8")
    try:
        load_recipe(output)
    except CloError:
        output.unlink()
        raise
    console.print(f"wrote {output}; next: clo-recipe plan {output}")


# --------------------------------------------------------------------------- wiring
def _register_command_modules() -> None:
    from .commands import COMMAND_MODULES

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.commands.{name}":
                continue  # that command group is not part of this build
            raise
        module.register(app)


_register_command_modules()


def main() -> None:
    try:
        app()
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
