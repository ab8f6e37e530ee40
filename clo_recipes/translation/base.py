"""The one interface every translation backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ..errors import CloError
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


def load_hf_translator(auto_model_class: str, name: str, revision: str | None, device: str | None):
    """Tokenizer and eval-mode model of a local/hub translator on `device` (CUDA when free
    to choose, bf16 where supported): (tokenizer, model, device). Shared by the seq2seq and
    causal backends so loading errors read the same."""
    import torch
    import transformers

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    kwargs = {"revision": revision} if revision else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, **kwargs)
        model = getattr(transformers, auto_model_class).from_pretrained(name, dtype=dtype, **kwargs)
    except OSError as error:
        raise CloError(f"cannot load translation model {name!r}: {error}",
                       hint="hub models need network or a local copy (HF_HUB_OFFLINE=1 uses the cache only)") from None
    return tokenizer, model.to(device).eval(), device
