"""Pad examples into forward passes and read back each sequence's answer log-probs.

A micro-batch holds the sequences of a few samples (four per CLO sample, of different
lengths). They are sorted by length and, when lengths differ a lot, cut into a few chunks,
each padded only to its own longest sequence; all chunks are forwarded before the loss, so
the sample's two preference pairs still meet in one loss and one backward pass.

Sequences are padded on the left with explicit position ids, so every answer ends at the
last position: the model then computes the output projection and softmax only for the last
`longest answer + 1` positions (`logits_to_keep`) instead of for prompts and padding too.
Position ids restart at each sequence's first real token, so the results equal an unpadded
forward (checked by tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..methods.clo import CloLogps
from ..methods.logps import IGNORE_INDEX, SequenceLogps
from .chat import Rendered
from .data import Example
from .streaming import LogpsPath, choose_path, sequence_logps, takes_logits_to_keep

# A new chunk starts when a sequence is shorter than this share of its chunk's longest.
CHUNK_SLACK = 0.8
MIN_CHUNK_ROWS = 4


@dataclass
class Chunk:
    """One padded forward pass over some rows of a batch."""

    rows: torch.Tensor  # positions of these sequences in the batch's name-major order
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    logits_to_keep: int

    def to(self, device: Any) -> "Chunk":
        return Chunk(self.rows.to(device), self.input_ids.to(device), self.attention_mask.to(device),
                     self.position_ids.to(device), self.labels.to(device), self.logits_to_keep)


@dataclass
class Batch:
    """The `names` sequences of `size` samples, in name-major order (all en_en, then en_l, ...)."""

    chunks: list[Chunk]
    answer_lengths: torch.Tensor  # (names * size,)
    names: tuple[str, ...]
    size: int
    tokens: int  # real (non-padding) tokens in the forward passes
    reference: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (size,) summed log-probs

    def to(self, device: Any) -> "Batch":
        return Batch([chunk.to(device) for chunk in self.chunks], self.answer_lengths.to(device), self.names,
                     self.size, self.tokens, {k: v.to(device) for k, v in self.reference.items()})

    def split(self, logps: SequenceLogps) -> dict[str, SequenceLogps]:
        """Per-name `(size,)` log-probs from the flat name-major result."""
        n = self.size
        return {name: SequenceLogps(logps.sum[i * n:(i + 1) * n], logps.count[i * n:(i + 1) * n])
                for i, name in enumerate(self.names)}

    def reference_logps(self) -> CloLogps:
        n = self.size
        return CloLogps(**{name: SequenceLogps(self.reference[name], self.answer_lengths[i * n:(i + 1) * n])
                           for i, name in enumerate(self.names)})


def plan_chunks(lengths: list[int], max_chunks: int) -> list[list[int]]:
    """Row indices sorted longest first, cut where lengths drop below `CHUNK_SLACK` of the
    chunk's longest (at most `max_chunks` chunks of at least `MIN_CHUNK_ROWS` rows)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    chunks = [[order[0]]]
    for position, row in enumerate(order[1:], start=1):
        current = chunks[-1]
        left = len(order) - position
        if (len(chunks) < max_chunks and len(current) >= MIN_CHUNK_ROWS and left >= MIN_CHUNK_ROWS
                and lengths[row] < CHUNK_SLACK * lengths[current[0]]):
            chunks.append([row])
        else:
            current.append(row)
    return chunks


def pad_left(sequences: list[Rendered], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, position_ids, labels) for sequences padded on the left."""
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
    return input_ids, attention_mask, position_ids, labels


def collate(examples: list[Example], names: tuple[str, ...], pad_id: int, *, with_reference: bool = False,
            max_chunks: int = 1) -> Batch:
    """The `names` sequences of `examples` as one batch of up to `max_chunks` forward passes."""
    sequences = [example.sequences[name] for name in names for example in examples]
    chunks = []
    for rows in plan_chunks([len(s) for s in sequences], max_chunks):
        members = [sequences[r] for r in rows]
        input_ids, attention_mask, position_ids, labels = pad_left(members, pad_id)
        keep = min(input_ids.shape[1], max(s.answer_length for s in members) + 1)
        chunks.append(Chunk(torch.tensor(rows), input_ids, attention_mask, position_ids, labels, keep))
    reference = {}
    if with_reference:
        reference = {name: torch.tensor([example.reference[name] for example in examples], dtype=torch.float32)
                     for name in names}
    answer_lengths = torch.tensor([s.answer_length for s in sequences])
    return Batch(chunks, answer_lengths, names, len(examples), sum(len(s) for s in sequences), reference)


def forward_logps(model: Any, batch: Batch, path: LogpsPath | None = None) -> dict[str, SequenceLogps]:
    """Answer log-probs of every sequence of `batch`, split by name; streamed or from full
    logits as `path` says (default: `choose_path`, decided once per model)."""
    trim = takes_logits_to_keep(model)
    path = path or choose_path(model)
    total = len(batch.answer_lengths)
    sums: torch.Tensor | None = None
    for chunk in batch.chunks:
        kwargs: dict[str, Any] = {"input_ids": chunk.input_ids, "attention_mask": chunk.attention_mask,
                                  "position_ids": chunk.position_ids, "use_cache": False}
        if trim:
            kwargs["logits_to_keep"] = chunk.logits_to_keep
        part = sequence_logps(model, kwargs, chunk.labels, path)
        if sums is None:
            sums = part.sum.new_zeros(total)
        sums = sums.index_put((chunk.rows,), part.sum)
    return batch.split(SequenceLogps(sums, batch.answer_lengths))
