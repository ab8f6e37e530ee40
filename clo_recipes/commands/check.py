"""`clo-recipe validate`'s work, free of typer so `main.py` can run it without building the
CLI (typer 0.29 builds a pydantic adapter per parameter at parse time: ~45 ms of CPU of a
~250 ms validate, measured by benchmarks/cli_startup.py)."""

from __future__ import annotations

from pathlib import Path


def check_files(files: list[str | Path], overrides: list[str]) -> int:
    """Statically check each recipe (a file, lock, bundle or shipped name); print ✓ or the
    errors per file; return the exit code (1 if any is invalid)."""
    from rich.console import Console

    from ..errors import CloError
    from ..runner.target import open_target

    console, err_console = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    failed = 0
    for file in files:
        try:
            recipe = open_target(file, overrides).loaded.recipe
        except CloError as exc:
            failed += 1
            err_console.print(f"[bold red]✗ {file}[/]")
            err_console.print(exc.render(), markup=False, highlight=False, soft_wrap=True)
            continue
        arms = ", ".join([recipe.method.name, *recipe.method.baselines])
        console.print(f"[bold green]✓ {file}[/]  {recipe.name}: {recipe.model.base} → {recipe.language} ({arms})")
    return 1 if failed else 0
