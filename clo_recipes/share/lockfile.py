"""Reading lock files (the format is described in `share/lock.py`).

Kept apart from pinning and verifying so `validate` and `plan` can accept a lock file
without importing the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Location, RecipeError
from ..recipe.load import LoadedRecipe, _apply_override, load_recipe, parse_override, read_yaml, validate_raw

LOCK_VERSION = 1
LOCK_SUFFIX = ".lock.yaml"


@dataclass
class Lock:
    path: Path
    recipe: dict[str, Any]
    pins: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def lock_path_for(recipe_path: Path) -> Path:
    """`recipes/x.yaml` -> `recipes/x.lock.yaml` (a lock maps to itself)."""
    if recipe_path.name.endswith(LOCK_SUFFIX):
        return recipe_path
    return recipe_path.with_name(recipe_path.name.rsplit(".", 1)[0] + LOCK_SUFFIX)


def is_lock_file(path: Path) -> bool:
    if path.name.endswith(LOCK_SUFFIX):
        return True
    try:
        with open(path, encoding="utf-8") as handle:
            return any(line.startswith("lock_version:") for line in handle)
    except (OSError, UnicodeDecodeError):
        return False


def load_locked(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[LoadedRecipe, Lock]:
    """The lock's `recipe:` as a validated `LoadedRecipe` (line numbers point into the lock
    file; `--set` overrides apply as usual) and the lock itself."""
    path = Path(path)
    data, locations = read_yaml(path)
    version = data.get("lock_version")
    if version != LOCK_VERSION:
        raise RecipeError(f"{path.name} is not a lock this clo-recipes reads (lock_version: {version!r})",
                          location=locations.get(("lock_version",)) or Location(str(path)),
                          hint=f"this version writes lock_version {LOCK_VERSION}; re-create it with `clo-recipe lock`")
    if not isinstance(data.get("recipe"), dict) or not isinstance(data.get("pins"), dict):
        raise RecipeError(f"{path.name} needs a `recipe:` and a `pins:` mapping", location=Location(str(path)))
    recipe_locations = {key[1:]: where for key, where in locations.items() if key[:1] == ("recipe",) and len(key) > 1}
    loaded = LoadedRecipe(path=path.resolve(), raw=copy.deepcopy(data["recipe"]), locations=recipe_locations)
    for text in overrides:
        field_path, value = parse_override(text)
        _apply_override(loaded.raw, field_path, value)
        loaded.overrides.add(field_path)
    loaded.recipe = validate_raw(loaded)
    meta = {k: v for k, v in data.items() if k not in ("recipe", "pins")}
    return loaded, Lock(path.resolve(), data["recipe"], data["pins"], meta)


def load_any(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[LoadedRecipe, Lock | None]:
    """A recipe or a lock file; the lock (or None) comes along for `verify_pins`."""
    path = Path(path)
    if path.is_file() and is_lock_file(path):
        return load_locked(path, overrides)
    return load_recipe(path, list(overrides)), None
