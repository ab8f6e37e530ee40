"""The `clo-recipe` entry point. A plain `validate FILE... [--set K=V]...` runs without
building the typer app (the hot path of editors and pre-commit hooks: it must stay well
under a second, benchmarks/cli_startup.py); every other command line, `--help` and any
option it does not know included, goes to the typer app in `cli.py`."""

from __future__ import annotations

import os
import sys

# pydantic scans every installed package's entry points for plugins at first model build
# (~0.1 s); this CLI uses none, and start-up time is a feature.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def plain_validate(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(files, overrides) of `[--debug] validate FILE... [--set K=V]...`, else None."""
    args = argv[1:] if argv[:1] == ["--debug"] else list(argv)
    if args[:1] != ["validate"]:
        return None
    files: list[str] = []
    overrides: list[str] = []
    rest = args[1:]
    while rest:
        word = rest.pop(0)
        if word == "--set" and rest:
            overrides.append(rest.pop(0))
        elif word.startswith("--set="):
            overrides.append(word.removeprefix("--set="))
        elif word.startswith("-"):
            return None  # --help or an option typer knows (or reports)
        else:
            files.append(word)
    return (files, overrides) if files else None


def main() -> None:
    plain = plain_validate(sys.argv[1:])
    if plain is not None:
        from .commands.check import check_files

        sys.exit(check_files(*plain))
    from .cli import main as typer_main

    typer_main()


if __name__ == "__main__":
    main()
