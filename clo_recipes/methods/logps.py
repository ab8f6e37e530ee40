"""Summed log-probabilities of answer tokens, the quantity every objective here is built on."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class SequenceLogps(NamedTuple):
    """Per-sequence log-probabilities of the answer tokens."""

    sum: torch.Tensor  # (batch,) summed log pi(y_t | x, y_<t) over answer tokens
    count: torch.Tensor  # (batch,) number of answer tokens

    def value(self, length_normalize: bool) -> torch.Tensor:
        """Summed log-prob, or the mean per token when `length_normalize`."""
        return self.sum / self.count.clamp(min=1) if length_normalize else self.sum


def answer_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> SequenceLogps:
    """Sum of log pi(label_t | tokens_<t) over positions whose label is not `ignore_index`.

    `labels` is `(batch, T)`, aligned with the input ids (prompt and padding set to
    `ignore_index`), as for a Hugging Face causal LM. `logits` is `(batch, K, vocab)` for the
    last `K <= T` input positions (a model called with `logits_to_keep=K`), so callers can skip
    the output projection over prompt tokens. Only answer positions reach the softmax, in fp32.
    """
    keep = logits.shape[1]
    if keep < 2:
        raise ValueError("need logits for at least two positions")
    targets = labels[:, 1:][:, -(keep - 1):]
    mask = targets != ignore_index
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[mask]
    # at least fp32 (half-precision logits are upcast; fp64 stays fp64 for numerical checks)
    picked = logits[:, :-1][mask]
    picked = picked.to(torch.promote_types(picked.dtype, torch.float32))
    token_logps = -F.cross_entropy(picked, targets[mask], reduction="none")
    sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=logits.device).index_add(0, rows, token_logps)
    return SequenceLogps(sums, mask.sum(dim=1))
