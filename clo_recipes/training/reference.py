"""Frozen reference log-probs, computed once in a no-grad pass and stored next to the run.

File format (`reference.jsonl`, one line per kept sample):

    {"id": "...", "logps": {"en_en": -41.2, "en_l": -97.0, "l_l": -60.3, "l_en": -55.1},
     "tokens": {"en_en": 23, "en_l": 51, "l_l": 49, "l_en": 22}}

`logps` are summed answer-token log-probs of the starting model (fp32 JSON floats, exact
round trip); `tokens` are the answer lengths, which training checks against its own
tokenization so a changed tokenizer or chat template cannot silently pair wrong numbers.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from ..engine.stages import REFERENCE_FILE  # noqa: F401  (the stage table names the file; stages import it here)
from ..errors import CloError
from ..files import read_jsonl, write_jsonl
from ..hardware.logps_plan import streams
from .batch import collate, forward_logps
from .data import Example


def token_budget(vocab_size: int) -> int:
    """Tokens per no-grad batch: bounded so the fp32 logits of kept positions stay near 1.5 GB
    (streamed log-probs keep no logits: then only a layer's working set grows with it)."""
    if streams(vocab_size):
        return 16384
    return max(512, min(16384, int(1.5e9 / (4 * max(vocab_size, 1)))))


def reference_batches(examples: list[Example], names: tuple[str, ...], budget: int) -> list[list[Example]]:
    """Longest first (an out-of-memory error shows up at once), as many as fit `budget` padded tokens."""
    ordered = sorted(examples, key=lambda e: -e.length)
    batches: list[list[Example]] = []
    for example in ordered:
        if batches and (len(batches[-1]) + 1) * len(names) * batches[-1][0].length <= budget:
            batches[-1].append(example)
        else:
            batches.append([example])
    return batches


def compute_reference(model: Any, examples: list[Example], names: tuple[str, ...], *, pad_id: int, device: Any,
                      autocast: Callable[[], Any] = nullcontext, progress: Any = None,
                      shares: list[int] | None = None) -> dict[str, dict[str, float]]:
    """{example id: {name: summed answer log-prob}} under `model` in eval mode, without gradients.

    In a multi-process launch every rank scores a disjoint share and all ranks receive the
    whole result; `shares`, when given, receives the number of samples each rank scored.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    budget = token_budget(model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config")
                          else model.config.vocab_size)
    # Samples are dealt out longest first, one to each rank in turn: every rank gets a like
    # share of the work, and each batches its own share within the token budget.
    ordered = sorted(examples, key=lambda e: -e.length)
    per_rank = [reference_batches(ordered[r::state.num_processes], names, budget) for r in range(state.num_processes)]
    # Sharded models (FSDP, ZeRO-3) need every rank in every forward: equal batch counts,
    # the padding batches (the shortest sample) have their results dropped.
    rounds = max(len(b) for b in per_rank)
    mine = per_rank[state.process_index]
    batches = [(b, True) for b in mine] + [(ordered[-1:], False)] * (rounds - len(mine))
    if progress is not None:  # this rank's share
        progress.reset(total=sum(len(b) for b, counted in batches if counted))
    was_training = model.training
    model.eval()
    found: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for batch_examples, counted in batches:
            batch = collate(batch_examples, names, pad_id, max_chunks=4).to(device)
            with autocast():
                logps = forward_logps(model, batch)
            if not counted:
                continue
            for name in names:
                for example, value in zip(batch_examples, logps[name].sum.float().tolist()):
                    found.setdefault(example.id, {})[name] = value
            if progress is not None:
                progress.update(len(batch_examples))
    model.train(was_training)
    parts = gather_object([found]) if state.num_processes > 1 else [found]
    merged: dict[str, dict[str, float]] = {}
    for part in parts:
        merged.update(part)
    # every sample scored by exactly one rank: a wrong split must not pass silently
    if sum(len(part) for part in parts) != len(merged) or set(merged) != {e.id for e in examples}:
        raise CloError(f"reference log-probs: {sum(len(p) for p in parts)} scores over {state.num_processes} "
                       f"processes for {len(examples)} samples ({len(merged)} distinct)",
                       hint="a bug in the split over processes; please report it")
    if shares is not None:
        shares[:] = [len(part) for part in parts]
    return merged


def write_reference(path: Path, examples: list[Example], logps: dict[str, dict[str, float]]) -> int:
    """Atomic: a crash or a full disk never leaves a partial file under this name."""
    return write_jsonl(path, ({"id": example.id, "logps": logps[example.id],
                               "tokens": {name: seq.answer_length for name, seq in example.sequences.items()}}
                              for example in examples))


def attach_reference(examples: list[Example], path: Path) -> None:
    """Fill `example.reference` from a stored file; every example must be there, token counts equal."""
    if not path.is_file():
        raise CloError(f"reference log-probs not found: {path}", hint="re-run the reference stage")
    stored = {row["id"]: row for row in read_jsonl(path)}
    for example in examples:
        row = stored.get(example.id)
        if row is None:
            raise CloError(f"sample {example.id!r} has no reference log-probs in {path}",
                           hint="the reference stage saw different data or train.max_length; re-run it")
        for name, rendered in example.sequences.items():
            if row["tokens"].get(name) != rendered.answer_length:
                raise CloError(
                    f"sample {example.id!r}: the reference was computed on {row['tokens'].get(name)} answer tokens "
                    f"for {name}, training sees {rendered.answer_length}",
                    hint="the tokenizer or chat template changed since the reference stage; re-run it",
                )
        example.reference = dict(row["logps"])
