"""Pad examples into one forward pass and read back each sequence's answer log-probs.

Sequences are padded on the left with explicit position ids, so every answer ends at the
last position: the model then computes the output projection and softmax only for the last
`longest answer + 1` positions (`logits_to_keep`) instead of for prompts and padding too.
Position ids restart at each sequence's first real token, so the results equal an unpadded
forward (checked by tests).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from ..methods.clo import CloLogps
from ..methods.logps import IGNORE_INDEX, SequenceLogps, answer_logps
from .data import Example


@dataclass
class Batch:
    input_ids: torch.Tensor  # (names * samples, T), name-major: all en_en rows, then en_l rows, ...
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    names: tuple[str, ...]
    size: int  # samples
    logits_to_keep: int
    reference: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (samples,) summed log-probs

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the forward pass."""
        return int(self.attention_mask.sum())

    def to(self, device: Any) -> "Batch":
        moved = {key: getattr(self, key).to(device) for key in ("input_ids", "attention_mask", "position_ids", "labels")}
        reference = {key: value.to(device) for key, value in self.reference.items()}
        return Batch(**moved, names=self.names, size=self.size, logits_to_keep=self.logits_to_keep, reference=reference)

    def split(self, logps: SequenceLogps) -> dict[str, SequenceLogps]:
        """Per-name `(samples,)` log-probs from the flat `(names * samples,)` result."""
        return {name: SequenceLogps(logps.sum[i * self.size:(i + 1) * self.size],
                                    logps.count[i * self.size:(i + 1) * self.size])
                for i, name in enumerate(self.names)}

    def reference_logps(self) -> CloLogps:
        counts = self.labels[:, 1:].ne(IGNORE_INDEX).sum(dim=1)
        return CloLogps(**{name: SequenceLogps(self.reference[name], counts[i * self.size:(i + 1) * self.size])
                           for i, name in enumerate(self.names)})


def collate(examples: list[Example], names: tuple[str, ...], pad_id: int, *, with_reference: bool = False) -> Batch:
    """One left-padded batch holding `names` of every example (name-major order)."""
    sequences = [example.sequences[name] for name in names for example in examples]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, rendered in enumerate(sequences):
        ids = torch.tensor(rendered.ids, dtype=torch.long)
        start = width - len(ids)
        input_ids[row, start:] = ids
        labels[row, start + rendered.prompt_length:] = ids[rendered.prompt_length:]
        attention_mask[row, start:] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    keep = min(width, max(s.answer_length for s in sequences) + 1)
    reference = {}
    if with_reference:
        reference = {name: torch.tensor([example.reference[name] for example in examples], dtype=torch.float32)
                     for name in names}
    return Batch(input_ids, attention_mask, position_ids, labels, names, len(examples), keep, reference)


def _accepts_logits_to_keep(model: Any) -> bool:
    return _forward_takes_logits_to_keep(type(_innermost(model)))


def _innermost(model: Any) -> Any:
    base = model
    while hasattr(base, "module"):  # DDP / accelerate wrappers
        base = base.module
    if hasattr(base, "get_base_model"):  # PEFT passes extra kwargs through to the base model
        base = base.get_base_model()
    return base


@functools.cache
def _forward_takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def forward_logps(model: Any, batch: Batch) -> dict[str, SequenceLogps]:
    """Answer log-probs of every sequence of `batch`, split by name."""
    kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                              "position_ids": batch.position_ids, "use_cache": False}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = batch.logits_to_keep
    logits = model(**kwargs).logits
    return batch.split(answer_logps(logits, batch.labels))
