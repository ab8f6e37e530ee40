"""`clo-recipe recipes` (the shipped recipes) and `clo-recipe init` (a new recipe, from a few
flags or from a shipped recipe)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

SCHEMA_PATH = Path("schemas/recipe.schema.json")
DEFAULTS = {"model": "meta-llama/Meta-Llama-3-8B-Instruct", "language": "th", "method": "clo", "adapter": "full",
            "hardware": "auto", "samples": 3200}


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes)
    app.command("init")(init)


def recipes() -> None:
    """List the recipes that ship with clo-recipes (run one by name: `clo-recipe run thai_llama`)."""
    from rich.console import Console
    from rich.table import Table

    from clo_recipes.runner.shipped import describe_shipped, shipped_dir, shipped_names

    console = Console(soft_wrap=True)
    table = Table(title=f"Shipped recipes ({shipped_dir()})", title_justify="left")
    for column in ("name", "model", "language", "method", "hardware"):
        table.add_column(column, overflow="fold")
    for recipe in describe_shipped():
        table.add_row(recipe.name, recipe.model, recipe.language, recipe.method, recipe.hardware)
    console.print(table)
    sweeps = shipped_names("sweeps")
    if sweeps:
        console.print(f"Shipped sweeps: {', '.join(sweeps)} (clo-recipe sweep NAME)")
    console.print("Run one: clo-recipe run NAME · start your own from one: clo-recipe init my.yaml --from NAME")


def init(
    output: Path = typer.Argument(Path("recipe.yaml"), help="Recipe file to write."),
    model: Optional[str] = typer.Option(None, help=f"Base model (hub id, folder, .gguf, pypi:<pkg>) [default: {DEFAULTS['model']}]."),
    language: Optional[str] = typer.Option(None, help=f"Target language (ISO code or English name) [default: {DEFAULTS['language']}]."),
    method: Optional[str] = typer.Option(None, help="clo, sft or sft+dpo [default: clo]."),
    adapter: Optional[str] = typer.Option(None, help="full, lora or qlora [default: full]."),
    hardware: Optional[str] = typer.Option(None, help="Hardware profile [default: auto]."),
    samples: Optional[int] = typer.Option(None, help="English samples to translate and train on [default: 3200]."),
    start_from: Optional[str] = typer.Option(None, "--from", help="Start from this shipped recipe (see `clo-recipe recipes`); "
                                                                  "the flags you give change it."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a starter recipe from a few flags (or from a shipped recipe), then validate it."""
    from rich.console import Console

    from clo_recipes.errors import CloError
    from clo_recipes.recipe.load import load_recipe

    if output.exists() and not force:
        raise CloError(f"{output} exists", hint="pass --force to overwrite, or choose another file name")
    given = {"model": model, "language": language, "method": method, "adapter": adapter, "hardware": hardware,
             "samples": samples}
    schema_file = Path.cwd() / SCHEMA_PATH
    schema_ref = os.path.relpath(schema_file, output.resolve().parent) if schema_file.exists() else str(SCHEMA_PATH)
    if start_from:
        text = _from_shipped(start_from, output, schema_ref, {k: v for k, v in given.items() if v is not None})
    else:
        text = _starter(output, schema_ref, {k: DEFAULTS[k] if v is None else v for k, v in given.items()})
    output.write_text(text, encoding="utf-8")
    try:
        load_recipe(output)
    except CloError:
        output.unlink()
        raise
    Console().print(f"wrote {output}; next: clo-recipe plan {output}")


def _language_code(value: str) -> str:
    """`--language` as its ISO 639-1 code; an unknown one is a one-screen error, not a traceback."""
    from clo_recipes.errors import CloError
    from clo_recipes.recipe.languages import get_language

    try:
        return get_language(value).iso1
    except ValueError as error:
        raise CloError(f"--language: {error}", hint="an ISO 639-1 or 639-3 code or an English name, e.g. th, tha, Thai") from None


def _name(model: str, language: str, method: str) -> str:
    return f"{language}-{Path(model).name.lower().replace('_', '-')}-{method.replace('+', '-')}"[:100]


def _starter(output: Path, schema_ref: str, values: dict) -> str:
    from clo_recipes.recipe.init_template import STARTER

    code = _language_code(values["language"])
    return STARTER.format(schema=schema_ref, path=output, name=_name(values["model"], code, values["method"]),
                          model=values["model"], language=code, method=values["method"],
                          baselines="sft" if values["method"] == "clo" else "", adapter=values["adapter"],
                          hardware=values["hardware"], samples=values["samples"])


def _from_shipped(name: str, output: Path, schema_ref: str, given: dict) -> str:
    """The shipped recipe as one self-contained file: `extends:` merged in, local files it
    names made absolute (they stay in the installed package), the given flags applied."""
    import yaml

    from clo_recipes.recipe.load import load_recipe
    from clo_recipes.recipe.resolve import _PATH_FIELDS
    from clo_recipes.runner.shipped import find_shipped

    source = find_shipped(name)
    loaded = load_recipe(source)
    raw = loaded.raw
    for path in _PATH_FIELDS:
        section = raw.get(path[0])
        value = section.get(path[1]) if isinstance(section, dict) else None
        if isinstance(value, str) and not Path(value).is_absolute():
            candidate = Path(loaded.location(path).file).parent / value
            if candidate.exists():
                section[path[1]] = str(candidate.resolve())
    if "model" in given:
        raw["model"] = {"base": given["model"]}
    if "language" in given:
        raw["language"] = _language_code(given["language"])
    if "method" in given:
        raw.setdefault("method", {})["name"] = given["method"]
        raw["method"]["baselines"] = ["sft"] if given["method"] == "clo" else []
    if "adapter" in given:
        raw.setdefault("adapter", {})["kind"] = given["adapter"]
    if "hardware" in given:
        raw["hardware"] = given["hardware"]
    if "samples" in given:
        raw.setdefault("data", {})["samples"] = given["samples"]
    if {"model", "language", "method"} & set(given):
        raw["name"] = _name(raw["model"]["base"], raw["language"], raw["method"]["name"] if "method" in raw else "clo")
    header = (f"# yaml-language-server: $schema={schema_ref}\n# Run: clo-recipe run {output}\n"
              f"# Started from the shipped recipe {source.stem} (clo-recipe init --from {source.stem}); "
              "`extends:` merged in.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
