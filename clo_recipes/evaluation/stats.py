"""Confidence intervals for the shares and win rates the evaluation reports."""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial share.

    Preferred over the normal approximation because evaluation sets are small (tens to a few
    hundred prompts) and shares near 0 or 1 are common (a base model answering Thai prompts
    in English has fidelity close to 0); the Wilson interval stays inside [0, 1] there.
    """
    if total <= 0:
        raise ValueError("a share needs at least one observation")
    if not 0 <= successes <= total:
        raise ValueError(f"successes={successes} outside [0, {total}]")
    share = successes / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z / denominator * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def share_with_interval(successes: int, total: int) -> dict:
    """`{"share", "low", "high", "k", "n"}` (share and bounds None when n == 0)."""
    if total == 0:
        return {"share": None, "low": None, "high": None, "k": 0, "n": 0}
    low, high = wilson_interval(successes, total)
    return {"share": successes / total, "low": low, "high": high, "k": successes, "n": total}


def mean_with_interval(scores: Sequence[float], z: float = Z95) -> dict:
    """Mean of per-item scores in [0, 1] with a normal-approximation 95% interval.

    Used for judge win rates, where an item's score is fractional (each prompt is judged in
    both orders and ties count half, so a prompt scores 0, .25, .5, .75 or 1) and a binomial
    interval would not apply. The standard error uses the sample standard deviation.
    """
    n = len(scores)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "stderr": None, "n": 0}
    mean = sum(scores) / n
    variance = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    stderr = math.sqrt(variance / n)
    return {
        "mean": mean,
        "low": max(0.0, mean - z * stderr),
        "high": min(1.0, mean + z * stderr),
        "stderr": stderr,
        "n": n,
    }
