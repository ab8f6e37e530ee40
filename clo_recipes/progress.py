"""The progress bar of the model stages (reference, training, evaluation).

tqdm on stderr, the same bars transformers shows while loading weights, so a run's output
reads as one style. Callers turn them off on every process but the main one, and when the
run's options say `quiet` (`StageContext.show_progress`).
"""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, desc: str, *, unit: str, initial: int = 0, enabled: bool = True) -> Any:
    """A tqdm bar with `.update(n)`, `.set_postfix(...)` and `.close()`; a no-op when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not enabled)
