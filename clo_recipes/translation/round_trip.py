"""Round-trip quality estimation: translate each translation back into English and score the
back-translation against the English source with chrF (`translation.round_trip`).

No reference translation exists for the data, but the source does: a translation that lost
or changed meaning rarely comes back close to it. chrF (Popović 2015) is sacrebleu's
implementation with its defaults: character 1- to 6-grams with whitespace removed, precision
and recall averaged over the n-gram orders both texts have, F-score with beta = 2 (recall
weighted higher), 0-100. Like the other filters it compares the natural-language part only
(code blocks, inline code and URLs are copied verbatim and would inflate the score).

A sample's score is the lower of its query's and its answer's: a pair is as good as its worse
half, and that is the number `filters.min_round_trip_chrf` is compared with.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

from clo_recipes.langid import natural_language_part

QUANTILES = {  # numpy.percentile: linear between closest ranks
    "p10": 10, "p25": 25, "median": 50, "p75": 75, "p90": 90}


@lru_cache(maxsize=1)
def _metric():
    from sacrebleu.metrics import CHRF

    return CHRF()


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence-level chrF of `hypothesis` against `reference`, 0-100 (sacrebleu defaults)."""
    return float(_metric().sentence_score(hypothesis, [reference]).score)


def round_trip_chrf(source: str, back_translation: str) -> float | None:
    """chrF of a back-translation against its English source, on their natural-language parts;
    None when the source has no words to compare (a code-only text, a number)."""
    reference = natural_language_part(source)
    if not any(ch.isalpha() for ch in reference):
        return None
    return round(chrf(natural_language_part(back_translation), reference), 2)


def sample_score(field_scores: dict[str, float | None]) -> float | None:
    """The lower of a sample's field scores (fields without words do not count)."""
    scored = [score for score in field_scores.values() if score is not None]
    return min(scored) if scored else None


def summarise(scores: Iterable[float], threshold: float, dropped: int) -> dict:
    """count, mean, min, quantiles, max (rounded to 0.01), the threshold and how many it dropped."""
    import numpy

    values = sorted(scores)
    out: dict = {"metric": "chrF", "count": len(values), "threshold": threshold, "dropped": dropped}
    if values:
        out["mean"] = round(sum(values) / len(values), 2)
        out["min"] = round(values[0], 2)
        out.update({name: round(float(numpy.percentile(values, q)), 2) for name, q in QUANTILES.items()})
        out["max"] = round(values[-1], 2)
    return out
