"""`clo-recipe lock`, `export` and `push`: reproducible, shareable runs.

Each goes through the door (`clo_recipes.runner.door`), as `clo-recipe run X.lock.yaml`,
`--relock` and `--from-bundle` do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("lock")(lock)
    app.command("export")(export)
    app.command("push")(push)


def _console():
    from rich.console import Console

    return Console(soft_wrap=True)


def _pins_table(document: dict, title: str):
    from rich.table import Table

    from clo_recipes.share.lock import describe_pin

    table = Table(title=title)
    for column in ("pinned", "to", "how"):
        table.add_column(column, overflow="fold")
    for field, pin in document["pins"]["inputs"].items():
        how = {"hub": f"hub commit ({pin.get('source')})", "file": "content sha256", "folder": "content sha256",
               "pypi": "package version + sha256", "served": "endpoint + name (cannot pin further)"}.get(pin["kind"], "")
        table.add_row(field, describe_pin(pin), how)
    samples = document["pins"]["samples"]
    if "ids_sha256" in samples:
        table.add_row("samples", f"ids sha256 {samples['ids_sha256'][:12]} ({samples.get('train')} train, "
                                 f"{samples.get('eval', 0)} eval)", samples.get("source_stage", ""))
    else:
        table.add_row("samples", "[yellow]not recorded[/]", samples.get("why", ""))
    versions = ", ".join(f"{k} {v}" for k, v in document["pins"]["versions"].items() if v)
    table.add_row("versions", versions, "installed packages")
    table.add_row("hardware", document["pins"]["hardware"]["profile"], "resolved profile")
    return table


def lock(
    file: Path = typer.Argument(..., help="Recipe file (or a lock file to re-pin in place)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a field before locking (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Lock file to write (default FILE.lock.yaml)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Use this hardware profile instead."),
    run_source: bool = typer.Option(False, "--run-source", help="Run the source stage first so the sampled ids get pinned."),
    check: bool = typer.Option(False, "--check", help="FILE is a lock: show what differs from it here, write nothing."),
) -> None:
    """Pin every input of a recipe (hub commits, file digests, sampled ids, package versions,
    hardware) into FILE.lock.yaml, a recipe that `clo-recipe run` reproduces or refuses."""
    console = _console()
    if check:
        _check(file, overrides or [], profile, console)
        return
    from clo_recipes.runner.door import lock_recipe

    path, document = lock_recipe(file, overrides or [], output=output, profile=profile,
                                 run_source=run_source, console=console)
    console.print(_pins_table(document, f"Pinned {document['locked_from']}"))
    console.print(f"wrote {path}; run it with: clo-recipe run {path}")


def _check(file: Path, overrides: list[str], profile: str | None, console) -> None:
    from clo_recipes.runner.door import check_lock
    from clo_recipes.share.lock import blocking

    _, differences = check_lock(file, overrides, profile)
    if not differences:
        console.print(f"[green]✓[/] everything pinned in {file} matches")
        return
    for difference in differences:
        mark = "[red]✗[/]" if difference.blocking else "[yellow]note[/]"
        console.print(f"{mark} {difference.render()}", highlight=False)
    if blocking(differences):
        raise typer.Exit(1)


def export(
    run_dir: Path = typer.Argument(..., help="Run directory (<output_dir>/<name>/)."),
    out: Path = typer.Argument(..., help="Bundle folder to write."),
    license: Optional[str] = typer.Option(None, "--license", help="License id for the model card (default: other)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle in OUT."),
) -> None:
    """Write a self-contained bundle: lock, stage manifests, translated data and pairs,
    metrics, report and plots, trained weights, and a Hugging Face model card."""
    from clo_recipes.runner.door import export_run

    console = _console()
    result = export_run(run_dir, out, license=license, force=force)
    console.print(f"[green]✓[/] bundle {result.path}: {', '.join(result.stages)}")
    if result.model_dir is None:
        console.print("[yellow]note[/] no trained model of the run's method: the bundle holds data and results only")
    if result.missing:
        console.print(f"[yellow]note[/] not finished, so not exported: {', '.join(result.missing)}")
    if result.redacted_files:
        console.print(f"[yellow]note[/] secret values masked in: {', '.join(result.redacted_files)}")
    console.print(f"reproduce: clo-recipe run {result.path / 'recipe.lock.yaml'} --from-bundle {result.path}")


def push(
    source: Path = typer.Argument(..., help="A bundle folder, or a run directory (exported on the fly)."),
    repo_id: str = typer.Argument(..., help="Hub repository, namespace/name."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Commit message."),
    license: Optional[str] = typer.Option(None, "--license", help="License id, when exporting a run directory."),
) -> None:
    """Upload a bundle to the Hugging Face hub (token from HF_TOKEN; HF_ENDPOINT for another hub)."""
    from clo_recipes.runner.door import export_run
    from clo_recipes.share.bundle import INDEX
    from clo_recipes.share.push import push_bundle

    console = _console()
    if (source / INDEX).is_file():
        result = push_bundle(source, repo_id, private=private, commit_message=message)
    else:
        with tempfile.TemporaryDirectory(prefix="clo-bundle-") as folder:
            bundle = export_run(source, Path(folder) / "bundle", license=license).path
            result = push_bundle(bundle, repo_id, private=private, commit_message=message)
    console.print(f"[green]✓[/] pushed {result.files} files to {result.repo_url}\n  commit: {result.commit_url}")
