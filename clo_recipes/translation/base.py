"""The one interface every translation backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from .cache import TranslatorIdentity


class Translator(ABC):
    """Translates a batch of segments from `src` to `tgt` (registry ISO 639-1 codes).

    The pipeline (`pipeline.translate_texts`) does the rest: segmenting, cache look-ups,
    length-grouped batches, progress. Backends load their model lazily, on the first batch,
    so a run whose every segment is cached never loads one.
    """

    identity: TranslatorIdentity
    batch_size: int = 16
    # False: the backend receives whole texts, not segments (a translation memory is keyed
    # by whole texts and does its own segment-level fallback).
    wants_segments: bool = True
    # False: not worth caching (the backend is itself a lookup).
    cacheable: bool = True
    # False: batches keep the data's order (a lookup gains nothing from length grouping, and
    # its errors then name the first missing text in data order).
    length_grouped: bool = True

    @abstractmethod
    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        """One translation per text, in order."""

    def close(self) -> None:
        """Free the model / connections (optional)."""


def local_revision(model: str, revision: str | None) -> str:
    """The cache revision of a translator: the hub revision as given, or, for a local folder,
    a digest of its files (an edited local model must not reuse old translations)."""
    folder = Path(model)
    if folder.is_dir():
        from clo_recipes.engine.fingerprint import DigestCache, tree_digest

        files = [path for path in folder.rglob("*") if path.is_file()]
        return "sha256:" + tree_digest(files, folder, DigestCache(None))
    return revision or ""
