"""What the user named, opened: a recipe file, a shipped recipe's name, a lock file or a
bundle folder (its lock, with the bundle to seed from). Static: no hardware detection, no
planning, so `validate` stays fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CloError
from ..recipe.load import LoadedRecipe
from ..share.lockfile import Lock, load_any
from .shipped import PREFIX, find_shipped, is_shipped_name, shipped_names

BUNDLE_INDEX, BUNDLE_LOCK = "bundle.json", "recipe.lock.yaml"  # share/bundle.py: INDEX, LOCK_NAME (not imported: validate stays light; a test runs a bundle folder)


@dataclass
class Opened:
    """A loaded recipe and where it came from."""

    loaded: LoadedRecipe
    path: Path  # the file read (a shipped recipe's, a bundle's lock)
    lock: Lock | None = None
    bundle: Path | None = None  # the target was a bundle folder


def locate(target: str | Path, kind: str = "") -> tuple[Path, Path | None]:
    """(file to read, bundle folder or None). A path that exists wins over a shipped name."""
    text = str(target)
    if text.startswith(PREFIX):
        return find_shipped(text, kind), None
    path = Path(text).expanduser()
    if path.is_dir() and (path / BUNDLE_INDEX).is_file():
        return path / BUNDLE_LOCK, path.resolve()
    if path.exists():
        return path, None
    if is_shipped_name(text):
        return find_shipped(text, kind), None
    name = path.name.rsplit(".", 1)[0]
    if name in shipped_names(kind):  # e.g. `recipes/demo_cpu.yaml` typed outside a checkout
        raise CloError(f"recipe file not found: {path}",
                       hint=f"a recipe of that name ships with clo-recipes: use `{name}` instead of the path")
    return path, None  # the loader says "not found" with its usual hint


def open_target(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Opened:
    """Load `target` with `--set` overrides applied; a lock comes with its pins."""
    path, bundle = locate(target)
    loaded, lock = load_any(path, overrides)
    return Opened(loaded, Path(path).resolve(), lock, bundle)
