"""Confidence intervals for the shares, win rates and mean NLLs the evaluation reports."""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: float, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial share.

    Preferred over the normal approximation because evaluation sets are small (tens to a few
    hundred prompts) and shares near 0 or 1 are common (a base model answering Thai prompts
    in English has fidelity close to 0); the Wilson interval stays inside [0, 1] there.

    `successes` may be fractional (judge scores with ties counted half): a score in [0, 1]
    with mean p has variance at most p(1 - p), so the interval is then conservative.
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


def share_with_interval(successes: float, total: int) -> dict:
    """`{"share", "low", "high", "k", "n"}` (share and bounds None when n == 0)."""
    if total == 0:
        return {"share": None, "low": None, "high": None, "k": 0, "n": 0}
    low, high = wilson_interval(successes, total)
    return {"share": successes / total, "low": low, "high": high, "k": successes, "n": total}


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240611
ALPHA = 0.05  # two-sided 95% intervals


def bootstrap_ratio_interval(nlls: Sequence[float], tokens: Sequence[int], *, resamples: int = BOOTSTRAP_RESAMPLES,
                             seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile bootstrap interval of sum(nll) / sum(tokens), resampling whole samples
    (a token-weighted mean whose tokens are not independent), seeded: deterministic."""
    import numpy as np

    nll = np.asarray(nlls, dtype=np.float64)
    count = np.asarray(tokens, dtype=np.float64)
    if len(nll) < 2:
        value = float(nll.sum() / count.sum())
        return value, value
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(nll), size=(resamples, len(nll)))
    ratios = nll[picks].sum(axis=1) / count[picks].sum(axis=1)
    low, high = np.quantile(ratios, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)
