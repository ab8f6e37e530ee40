"""What every objective returns: the differentiable loss and what to log about it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .dpo import PreferenceTerms


@dataclass
class LossOutput:
    loss: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)  # detached parts: "nll", "preference"
    pairs: dict[str, PreferenceTerms] = field(default_factory=dict)  # "en" / "target" -> per-pair terms
