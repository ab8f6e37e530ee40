"""Negative log-likelihood of answers given their queries (the SFT objective)."""

from __future__ import annotations

import torch

from .logps import SequenceLogps
from .output import LossOutput


def nll_loss(answers: SequenceLogps | list[SequenceLogps], num_tokens: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Token-level mean NLL: -(sum of answer-token log-probs) / (number of answer tokens).

    Several sets (e.g. target and English answers) are pooled token by token. `num_tokens`
    overrides the denominator, e.g. with the answer tokens of the whole optimizer step, so the
    loss does not depend on how the step is split into micro-batches.
    """
    parts = answers if isinstance(answers, list) else [answers]
    total = sum(part.sum.sum() for part in parts)
    count = sum(part.count.sum() for part in parts) if num_tokens is None else num_tokens
    return -total / count


def sft_loss(answers: list[SequenceLogps], num_tokens: int | float | torch.Tensor | None = None) -> LossOutput:
    """The SFT baseline: token-level mean NLL over the given answer sets."""
    nll = nll_loss(answers, num_tokens)
    return LossOutput(nll, {"nll": nll.detach()})
