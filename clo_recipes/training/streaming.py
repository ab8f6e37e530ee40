"""Run a model's forward pass with its output head computing streamed answer log-probs.

The forward goes through the model exactly as the caller wraps it (DDP, FSDP, accelerate's
autocast, PEFT), so every wrapper's hooks fire: DDP's gradient all-reduce, FSDP's gathering of
the head's weights. Only the head module's `forward` is swapped, for the duration of the call,
for one that takes the hidden states it is given (the last `logits_to_keep` positions), picks
the answer positions and returns their log-probs (`methods/streamed.py`) instead of logits.

A model may change the head's output before returning it (Gemma-2's logit soft-cap): the
log-probs are then read from the head call itself, with that transform applied inside.
`choose_path` checks once, on a 6-token probe, that the streamed log-probs equal the full
logits' for this model, and falls back to the full logits where they do not (a head or a
post-processing step this module does not know).
"""

from __future__ import annotations

import functools
import inspect
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..hardware.logps_plan import chunk_bounds, chunk_rows, streams
from ..methods.logps import IGNORE_INDEX, SequenceLogps, answer_logps
from ..methods.streamed import LogitTransform, streamed_token_logps

# Probe agreement, in nats per sequence of 3 probe tokens: the two paths share every product but
# the head's row blocking, so they agree to rounding (a bf16 logit of ~16 rounds to 1/16 at worst,
# fp32 ones to ~1e-6); a missed transform (a logit scale or soft-cap) moves log-probs by whole nats.
PROBE_TOLERANCE = {torch.float16: 0.25, torch.bfloat16: 0.25}
PROBE_TOLERANCE_WIDE = 1e-3  # fp32 and fp64 logits


@dataclass
class LogpsPath:
    streamed: bool
    reason: str
    chunk_tokens: int = 0  # answer tokens per chunk, at least
    transform: LogitTransform = field(default_factory=LogitTransform)
    max_chunk_tokens: int = 0  # chunks grow with a call's answer tokens up to this (0: fixed chunks)

    def rows(self, answer_tokens: int) -> int:
        """Answer tokens per chunk for a call with `answer_tokens` of them (`hardware/logps_plan.py`)."""
        return chunk_rows(answer_tokens, self.chunk_tokens, self.max_chunk_tokens)


def innermost(model: Any) -> Any:
    """The Hugging Face model under DDP / accelerate / PEFT wrappers."""
    base = model
    while hasattr(base, "module"):
        base = base.module
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    return base


@functools.cache
def _takes_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the model can skip the head over prompt positions (`logits_to_keep`)."""
    return _takes_keep(type(innermost(model)))


def text_config(model: Any) -> Any:
    config = innermost(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def logit_transform(config: Any) -> LogitTransform:
    """What the model does to its head's output: a logit scale (Cohere multiplies by
    `logit_scale`, Granite divides by `logits_scaling`) and a soft-cap (Gemma 2/3)."""
    scale = getattr(config, "logit_scale", None)
    if getattr(config, "logits_scaling", None):
        scale = 1.0 / float(config.logits_scaling)
    softcap = getattr(config, "final_logit_softcapping", None)
    return LogitTransform(scale=float(scale) if scale not in (None, 1, 1.0) else None,
                          softcap=float(softcap) if softcap else None)


def streamed_answer_logps(model: Any, inputs: dict[str, Any], labels: torch.Tensor, path: LogpsPath) -> SequenceLogps:
    """`model(**inputs)` with its head returning answer-token log-probs; summed per row of `labels`
    (`(batch, T)`, answer tokens labelled as in `methods.logps.answer_logps`)."""
    head = innermost(model).get_output_embeddings()
    trains = any(p.requires_grad for p in head.parameters())
    previous = head.__dict__.get("forward")  # an instance-level forward (accelerate's device hooks)
    original = head.forward
    found: dict[str, torch.Tensor] = {}

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        keep = hidden.shape[1]
        if keep < 2:
            raise ValueError("need hidden states for at least two positions")
        targets = labels[:, 1:][:, -(keep - 1):]
        mask = targets != IGNORE_INDEX
        found["rows"] = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[mask]
        found["count"] = mask.sum(dim=1)
        answers = targets[mask]
        found["logps"] = streamed_token_logps(hidden[:, :-1][mask], answers, original, head_trains=trains,
                                              chunk_tokens=path.rows(answers.numel()), transform=path.transform)
        return found["logps"]

    head.forward = forward
    try:
        returned = model(**inputs).logits
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous
    token_logps = found["logps"]
    if returned.shape == token_logps.shape and torch.equal(returned, token_logps):
        token_logps = returned  # through the wrappers' outputs (DDP's unused-parameter search sees them)
    sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return SequenceLogps(sums.index_add(0, found["rows"], token_logps), found["count"])


def full_answer_logps(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> SequenceLogps:
    return answer_logps(model(**inputs).logits, labels)


def sequence_logps(model: Any, inputs: dict[str, Any], labels: torch.Tensor, path: LogpsPath) -> SequenceLogps:
    """Summed answer log-probs of `model(**inputs)` per row of `labels`, the way `path` says."""
    if path.streamed:
        return streamed_answer_logps(model, inputs, labels, path)
    return full_answer_logps(model, inputs, labels)


def _probe_agrees(model: Any, path: LogpsPath, autocast: Callable[[], Any]) -> bool:
    """Streamed and full log-probs on 2 x 6 probe tokens, in eval mode and without gradients,
    under the same autocast as the real forwards (under bf16 the trainable weights are fp32
    masters next to bf16 frozen ones: only autocast makes their products agree in dtype)."""
    config = text_config(model)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(config.vocab_size, 1000), (2, 6), generator=generator).to(device)
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    inputs: dict[str, Any] = {"input_ids": ids, "use_cache": False}
    if takes_logits_to_keep(model):
        inputs["logits_to_keep"] = 4
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast():
            logits = model(**inputs).logits
            full = answer_logps(logits, labels).sum
            streamed = streamed_answer_logps(model, inputs, labels, path).sum
    finally:
        model.train(was_training)
    tolerance = PROBE_TOLERANCE.get(logits.dtype, PROBE_TOLERANCE_WIDE)
    return bool((streamed.double() - full.double()).abs().max() <= tolerance)


def choose_path(model: Any, autocast: Callable[[], Any] = nullcontext) -> LogpsPath:
    """The log-prob path for `model` (call before wrapping it for DDP/FSDP; cached on the model);
    `autocast` is the context the forwards run in (accelerate's `Accelerator.autocast`)."""
    base = innermost(model)
    cached = getattr(base, "_clo_logps_path", None)
    if cached is not None:
        return cached
    vocab = int(text_config(model).vocab_size)
    if not streams(vocab):
        path = LogpsPath(False, f"full logits: vocabulary {vocab:,} is small")
    elif base.get_output_embeddings() is None:
        path = LogpsPath(False, f"full logits: {type(base).__name__} has no output embeddings to stream")
    else:
        least, most = chunk_bounds(vocab)
        path = LogpsPath(True, f"streamed: vocabulary {vocab:,}", least, logit_transform(text_config(model)), most)
        if not _probe_agrees(base, path, autocast):
            path = LogpsPath(False, f"full logits: {type(base).__name__}'s streamed log-probs differ from its "
                                    "logits' on a probe (an output head or logit transform this engine does not know)")
    base._clo_logps_path = path
    return path
