"""`adapter:` which weights train and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class AdapterSection(Section):
    kind: Literal["full", "lora", "qlora"] = Field(
        default="full",
        description="`full`: train the chosen weights directly (paper); `lora`; `qlora`: LoRA on a 4-bit NF4 base (bitsandbytes; CPU or CUDA).",
    )
    trainable: Literal["attention", "all"] = Field(
        default="attention",
        description=(
            "`attention`: only the q/k/v/o projections (paper), found per architecture; `all`: "
            "every weight with `full`, every linear layer but the output head with `lora`/`qlora`. "
            "For very low-resource languages the paper found full fine-tuning of everything much better."
        ),
    )
    target_modules: list[str] | None = Field(
        default=None,
        description=(
            "Explicit module names to train (leaf names like `q_proj` or full dotted names), "
            "overriding what `trainable` finds per architecture."
        ),
    )
    r: int = Field(default=16, ge=1, description="LoRA rank.")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout.")
