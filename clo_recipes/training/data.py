"""From CLO quadruples to tokenized training examples, and their order per optimizer step.

A sample `{"id", "x_en", "y_en", "x_l", "y_l"}` becomes up to four rendered sequences, named
query-answer like the loss inputs (`methods.clo`):

    en_en: x_en -> y_en    en_l: x_en -> y_l    l_l: x_l -> y_l    l_en: x_l -> y_en

CLO and DPO use all four (the sample's two preference pairs); SFT uses `l_l` and/or `en_en`.
The sequences of one sample always travel in the same micro-batch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import CloError
from .chat import ChatRenderer, Rendered

SEQUENCES = {"en_en": ("x_en", "y_en"), "en_l": ("x_en", "y_l"), "l_l": ("x_l", "y_l"), "l_en": ("x_l", "y_en")}
PREFERENCE_SEQUENCES = ("en_en", "en_l", "l_l", "l_en")
SFT_SEQUENCES = {"both": ("en_en", "l_l"), "target": ("l_l",), "english": ("en_en",)}


@dataclass
class Example:
    id: str
    sequences: dict[str, Rendered]
    reference: dict[str, float] = field(default_factory=dict)  # name -> summed reference log-prob

    @property
    def length(self) -> int:
        """The longest of its sequences: what a padded batch holding it must fit."""
        return max(len(s) for s in self.sequences.values())

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences.values())


@dataclass
class ExampleSet:
    examples: list[Example]
    dropped_too_long: int
    rows: int


def build_examples(rows: Iterable[dict], renderer: ChatRenderer, names: tuple[str, ...], max_length: int,
                   *, chunk: int = 256) -> ExampleSet:
    """Render and tokenize `names` for every row; drop samples with any sequence over `max_length`.

    Raises a CloError when nothing is left, saying how long the shortest sample is.
    """
    rows = list(rows)
    if not rows:
        raise CloError("the training set is empty", hint="check the pairs stage output (train.jsonl)")
    missing = {key for row in rows[:1] for name in names for key in SEQUENCES[name] if key not in row}
    if missing:
        raise CloError(f"training rows lack the fields {sorted(missing)}", hint="expected {id, x_en, y_en, x_l, y_l}")
    examples: list[Example] = []
    shortest = math.inf
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        pairs = [(row[SEQUENCES[name][0]], row[SEQUENCES[name][1]]) for row in part for name in names]
        rendered = renderer.render_many(pairs)
        for offset, row in enumerate(part):
            sequences = dict(zip(names, rendered[offset * len(names):(offset + 1) * len(names)]))
            example = Example(str(row["id"]), sequences)
            if example.length <= max_length:
                examples.append(example)
            else:
                shortest = min(shortest, example.length)
    if not examples:
        raise CloError(
            f"no training sample fits train.max_length={max_length} tokens "
            f"(the shortest needs {shortest}, prompt and answer in the chat template)",
            hint=f"raise train.max_length to at least {shortest}",
        )
    return ExampleSet(examples, len(rows) - len(examples), len(rows))


@dataclass(frozen=True)
class StepPlan:
    """The examples of one optimizer step: all ranks' (for loss denominators) and this rank's micro-batches."""

    epoch: int
    examples: tuple[int, ...]
    micro_batches: tuple[tuple[int, ...], ...]


def steps_per_epoch(num_examples: int, global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise CloError(f"train.global_batch_size {global_batch} cannot be split evenly over {world_size} processes",
                       hint=f"use a multiple of {world_size}")
    usable = num_examples - num_examples % world_size
    if usable == 0:
        raise CloError(f"{num_examples} training samples cannot be shared by {world_size} processes")
    return math.ceil(usable / global_batch)


def total_steps(num_examples: int, *, epochs: float, max_steps: int | None, global_batch: int, world_size: int) -> int:
    return max_steps or max(1, math.ceil(epochs * steps_per_epoch(num_examples, global_batch, world_size)))


def epoch_steps(lengths: list[int], *, epoch: int, seed: int, global_batch: int, micro_batch: int,
                world_size: int, rank: int) -> list[StepPlan]:
    """Shuffle (seeded by seed and epoch, so a resumed run sees the same order), cut into
    optimizer steps of `global_batch` samples, and within each step sort by length and cut
    into micro-batches of similar length (little padding). Every rank gets the same number
    of micro-batches per step (distributed backward passes must pair up); a remainder of
    fewer than `world_size` samples is left out of the epoch.
    """
    steps_per_epoch(len(lengths), global_batch, world_size)  # validates the split
    order = list(range(len(lengths)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    order = order[: len(order) - len(order) % world_size]
    plans = []
    for start in range(0, len(order), global_batch):
        step = sorted(order[start:start + global_batch], key=lambda i: (-lengths[i], i))
        per_rank = len(step) // world_size
        chunks = world_size * math.ceil(per_rank / micro_batch)
        bounds = [round(c * len(step) / chunks) for c in range(chunks + 1)]
        micro = [tuple(step[bounds[c]:bounds[c + 1]]) for c in range(chunks)]
        plans.append(StepPlan(epoch, tuple(step), tuple(micro[rank::world_size])))
    return plans


def iterate_steps(lengths: list[int], *, total: int, seed: int, global_batch: int, micro_batch: int,
                  world_size: int, rank: int, start: int = 0) -> Iterable[tuple[int, StepPlan]]:
    """(global step index, plan) for steps `start..total-1`, across as many epochs as needed."""
    per_epoch = steps_per_epoch(len(lengths), global_batch, world_size)
    epoch = start // per_epoch
    while True:
        plans = epoch_steps(lengths, epoch=epoch, seed=seed, global_batch=global_batch, micro_batch=micro_batch,
                            world_size=world_size, rank=rank)
        for index, plan in enumerate(plans):
            step = epoch * per_epoch + index
            if step >= total:
                return
            if step >= start:
                yield step, plan
        epoch += 1
