"""Quality filters for machine translations (`translation.filters`).

MT models fail in a few recognisable ways: they return nothing, copy the source, stop half
way or run on, loop on a phrase, or answer in the wrong language (often English). Each check
below catches one of those; every check looks at the natural-language part of the texts
(code blocks, inline code and URLs are copied verbatim and would blur the signal). Checks
that are unreliable on very short texts only apply from a minimum length, so "OK" -> "OK"
or a name is never dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

from clo_recipes.langid import detect, natural_language_part

REASONS = ("empty", "copy", "length_ratio", "repetition", "language")

MIN_CHARS_FOR_RATIO = 20  # below this, lengths vary too much ("Hi" -> "Ciao")
MIN_WORDS_FOR_COPY = 3  # shorter identical texts are usually names, numbers, code words
MIN_LETTERS_FOR_LANGID = 20  # language ID on a few letters is a coin toss
LANGID_MIN_CONFIDENCE = 0.5  # drop only when another language is detected with confidence


@dataclass(frozen=True)
class Verdict:
    reason: str  # one of REASONS
    detail: str


def _char_weight(ch: str) -> int:
    """How many Latin characters one character is worth: one Han character carries about a
    word, kana and Hangul syllables about half; so that length ratios compare across scripts."""
    code = ord(ch)
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
        return 3
    if 0x3040 <= code <= 0x30FF or 0xAC00 <= code <= 0xD7AF:
        return 2
    return 1


def weighted_length(text: str) -> int:
    return sum(_char_weight(ch) for ch in text)


def _tokens(text: str) -> tuple[list[str], int]:
    """Words and n=6 for spaced scripts; characters and n=15 for unspaced ones (zh, ja, th).

    Long enough that natural parallel phrasing ("two hours before a domestic flight and
    three hours before an international flight") is not mistaken for a loop."""
    words = text.split()
    if words and len(text) / len(words) <= 20:
        return words, 6
    return [ch for ch in text if not ch.isspace()], 15


def repetition_share(text: str) -> float:
    """Share of tokens that sit inside an n-gram occurring more than once."""
    tokens, n = _tokens(text)
    if len(tokens) < 2 * n:
        return 0.0
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(tokens)
    for start, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[start:start + n] = [True] * n
    return sum(covered) / len(tokens)


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def check_translation(source: str, translation: str, target: str, settings: Any) -> Verdict | None:
    """Why this translation of `source` into `target` (ISO 639-1) should be dropped, or None.

    `settings` is the recipe's `translation.filters` section.
    """
    if source.strip() and not translation.strip():
        return Verdict("empty", "the translation is empty")
    src, out = natural_language_part(source), natural_language_part(translation)
    if settings.drop_copies and len(src.split()) >= MIN_WORDS_FOR_COPY and _normalised(src) == _normalised(out):
        return Verdict("copy", "the translation is the source text, untranslated")
    if len(src) >= MIN_CHARS_FOR_RATIO:
        ratio = weighted_length(out) / weighted_length(src)
        if not settings.min_length_ratio <= ratio <= settings.max_length_ratio:
            return Verdict("length_ratio", f"length ratio {ratio:.2f} outside "
                                           f"[{settings.min_length_ratio}, {settings.max_length_ratio}]")
    share = repetition_share(out)
    if share > settings.max_repetition and repetition_share(src) <= settings.max_repetition:
        return Verdict("repetition", f"{share:.0%} of the translation repeats itself")
    if settings.language_id and sum(ch.isalpha() for ch in out) >= MIN_LETTERS_FOR_LANGID:
        code, confidence = detect(out)
        if code != target and confidence >= LANGID_MIN_CONFIDENCE:
            return Verdict("language", f"detected {code} ({confidence:.2f}), expected {target}")
    return None
