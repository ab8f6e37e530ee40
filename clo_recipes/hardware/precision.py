"""The one table from `hardware.precision` to accelerate's `mixed_precision` name.

Training, the reference stage and the launcher's accelerate config all read it, so they can
never disagree. fp32 and fp64 run without autocast ("no").
"""

from __future__ import annotations

MIXED_PRECISION = {"fp64": "no", "fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def mixed_precision(precision: str) -> str:
    """accelerate's name for a resolved `hardware.precision`."""
    return MIXED_PRECISION[precision]
