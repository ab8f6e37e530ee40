"""The optimizer and learning-rate schedule of a training run, built from the recipe's names."""

from __future__ import annotations

import math
from typing import Any


def build_optimizer(named_params: list[tuple[str, Any]], kind: str, lr: float, weight_decay: float) -> Any:
    """AdamW over the trainable weights; biases and norms get no weight decay."""
    import torch

    decay = [p for _, p in named_params if p.ndim >= 2]
    no_decay = [p for _, p in named_params if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    if kind == "adamw_torch":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if kind == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: Any, name: str, warmup_ratio: float, steps: int) -> Any:
    from transformers import get_scheduler

    kind = "constant_with_warmup" if name == "constant" else name
    return get_scheduler(kind, optimizer, num_warmup_steps=math.ceil(warmup_ratio * steps), num_training_steps=steps)
