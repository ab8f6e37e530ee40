"""The recipes that ship with clo-recipes, found by name: `clo-recipe run thai_llama`.

The repository's `recipes/` folder travels inside the package as `clo_recipes/shipped` (a
link in the source tree; `pip install` and the wheel copy the files), so an installed
package or a Docker image runs a shipped recipe without a checkout. A name is looked up
only when no such file exists: a file in the working directory always wins.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..errors import CloError

SUFFIXES = (".yaml", ".yml")
PREFIX = "recipes:"  # `recipes:thai_llama` says "the shipped one" even if a file has that name


def shipped_dir() -> Path | None:
    """The folder of shipped recipes: inside the installed package, else the source tree's
    `recipes/` (a checkout whose link git could not make, e.g. on Windows)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "shipped", package.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    return None


def _files(kind: str = "") -> dict[str, Path]:
    folder = shipped_dir()
    if folder is None:
        return {}
    folder = folder / kind if kind else folder
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def shipped_names(kind: str = "") -> list[str]:
    """Runnable recipes (`kind=""`) or sweep files (`kind="sweeps"`) by name."""
    return list(_files(kind))


def is_shipped_name(target: str) -> bool:
    """A bare name (`thai_llama`, `thai_llama.yaml`, `recipes:thai_llama`), not a path."""
    text = target.removeprefix(PREFIX)
    return target.startswith(PREFIX) or ("/" not in text and "\\" not in text and bool(text))


def find_shipped(target: str, kind: str = "") -> Path:
    """The shipped file named `target`; an unknown name lists the shipped ones."""
    name = target.removeprefix(PREFIX)
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    files = _files(kind)
    if name in files:
        return files[name]
    what = "sweep" if kind == "sweeps" else "recipe"
    close = difflib.get_close_matches(name, list(files), n=1)
    listing = ", ".join(files) or "none (this installation ships no recipes)"
    raise CloError(f"no {what} file '{target}' here, and no shipped {what} of that name",
                   hint=(f"did you mean '{close[0]}'? " if close else "") + f"shipped {what}s: {listing}"
                        + ("; `clo-recipe recipes` shows what each one trains" if not kind else ""))


@dataclass
class ShippedRecipe:
    name: str
    path: Path
    model: str
    language: str
    method: str
    hardware: str
    summary: str  # the comment line after the `Run:` line


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines()[:8]:
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and not text.startswith(("Run:", "yaml-language-server")):
            return text
    return ""


def describe_shipped() -> list[ShippedRecipe]:
    """Each shipped recipe with its model, language, methods and hardware (statically
    loaded: no hardware detection, nothing imported beyond the recipe layer)."""
    from ..recipe.load import load_recipe

    found = []
    for name, path in _files().items():
        recipe = load_recipe(path).recipe
        arms = ", ".join([recipe.method.name, *recipe.method.baselines])
        hardware = recipe.hardware.profile or "auto"
        found.append(ShippedRecipe(name, path, recipe.model.base, recipe.language,
                                   f"{arms} ({recipe.adapter.kind}, {recipe.adapter.trainable})", hardware,
                                   _summary(path)))
    return found
