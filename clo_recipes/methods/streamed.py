"""Answer-token log-probs from final hidden states, without materialising `[tokens, vocab]` logits.

At a 128k vocabulary the logits of a CLO micro batch (four sequences of up to
`train.max_length` answer tokens) are the largest memory term of training: 8192 tokens x
128256 x (bf16 logits + fp32 copy + fp32 softmax) is over 11 GiB. Here the output projection
and the log-softmax run over a few tokens at a time (a chunk of `chunk_tokens` rows), and only
one log-prob per token leaves a chunk. The head is whatever module the model uses (a Linear,
tied to the embeddings or not, with or without bias, a PEFT wrapper), called on a chunk of
hidden states; a logit soft-cap or scale the model applies after it is applied here.

Backward without the logits, two ways:
- the head is frozen (LoRA, QLoRA, attention-only training: the paper's setup): each token's
  log-prob depends on its own hidden state only, so the forward also computes
  d logp_t / d h_t (one extra product with the head, which the full-logits path does in
  backward anyway) and backward scales it by the incoming gradient: no recompute at all;
- the head trains (full training, tied embeddings that train, a LoRA on the head): each chunk
  is checkpointed and recomputed in backward, so its weight gradients flow through the head
  module and its hooks like any other parameter's (DDP, FSDP).
Without autograd (the reference stage, evaluation) chunks are computed and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

Head = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LogitTransform:
    """What a model does to the head's output before the softmax: multiply by `scale`, then
    `softcap * tanh(z / softcap)` (Gemma-2's final_logit_softcapping)."""

    scale: float | None = None
    softcap: float | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def logps_of_logits(logits: torch.Tensor, targets: torch.Tensor, transform: LogitTransform) -> torch.Tensor:
    """log softmax(transform(logits))[target] per row, in at least fp32 (fp64 stays fp64)."""
    logits = transform(_at_least_fp32(logits))
    picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    return picked - torch.logsumexp(logits, dim=1)


# Backward nodes that do not read their output: the logits can be overwritten in place.
_OUTPUT_NOT_SAVED = {"ToCopyBackward0", "MmBackward0", "AddmmBackward0", "ViewBackward0", "UnsafeViewBackward0"}


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


class _FrozenHeadLogps(torch.autograd.Function):
    """Log-probs through a head without trainable weights; keeps d logp_t / d h_t (tokens x
    hidden) for backward instead of the logits (tokens x vocab)."""

    @staticmethod
    def forward(ctx, hidden, targets, head, transform, chunk_tokens):
        values, slopes = [], []
        for start, end in _chunks(hidden.shape[0], chunk_tokens):
            piece, rows = hidden[start:end].detach().requires_grad_(), targets[start:end].unsqueeze(1)
            with torch.enable_grad():
                logits = transform(_at_least_fp32(head(piece)))
            # softmax in place in one buffer, then d logp / d logits = onehot(target) - softmax;
            # a copy first where the logits' own backward reads them (a transform's tanh)
            z = logits.detach() if type(logits.grad_fn).__name__ in _OUTPUT_NOT_SAVED else logits.detach().clone()
            top = z.amax(dim=1, keepdim=True)
            picked = z.gather(1, rows) - top
            total = z.sub_(top).exp_().sum(dim=1, keepdim=True)
            values.append((picked - total.log()).squeeze(1))
            grad_logits = z.div_(total).neg_().scatter_add_(1, rows, torch.ones_like(rows, dtype=z.dtype))
            (slope,) = torch.autograd.grad(logits, piece, grad_logits)
            slopes.append(slope)
            del logits, z, grad_logits  # before the next chunk allocates its own
        ctx.save_for_backward(torch.cat(slopes))
        return torch.cat(values)

    @staticmethod
    def backward(ctx, grad):
        (slopes,) = ctx.saved_tensors
        return (grad.unsqueeze(1) * slopes).to(slopes.dtype), None, None, None, None


def _checkpointed(hidden: torch.Tensor, targets: torch.Tensor, head: Head, transform: LogitTransform,
                  chunk_tokens: int) -> torch.Tensor:
    def piece(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return logps_of_logits(head(h), t, transform)

    return torch.cat([checkpoint(piece, hidden[start:end], targets[start:end], use_reentrant=False)
                      for start, end in _chunks(hidden.shape[0], chunk_tokens)])


def streamed_token_logps(hidden: torch.Tensor, targets: torch.Tensor, head: Head, *, head_trains: bool,
                         chunk_tokens: int, transform: LogitTransform = LogitTransform()) -> torch.Tensor:
    """log p(target_t | h_t) for rows `hidden` `(tokens, hidden)` and `targets` `(tokens,)`.

    `head` maps a `(rows, hidden)` chunk to its `(rows, vocab)` logits; `head_trains` says
    whether any of its weights needs a gradient. Values and gradients equal those of
    `log_softmax(transform(head(hidden)))` gathered at `targets` (tests check it in fp64).
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.promote_types(hidden.dtype, torch.float32))
    chunk_tokens = max(1, int(chunk_tokens))
    if not torch.is_grad_enabled() or not (hidden.requires_grad or head_trains):
        return torch.cat([logps_of_logits(head(hidden[start:end]), targets[start:end], transform)
                          for start, end in _chunks(hidden.shape[0], chunk_tokens)])
    if head_trains:
        return _checkpointed(hidden, targets, head, transform, chunk_tokens)
    return _FrozenHeadLogps.apply(hidden, targets, head, transform, chunk_tokens)
