"""`method:` the training objective (docs/method.md says where each default comes from)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section

MethodName = Literal["clo", "sft", "sft+dpo"]


class MethodSection(Section):
    name: MethodName = Field(
        default="clo",
        description=(
            "`clo`: cross-lingual preference loss + target NLL (the paper); `sft`: NLL on the "
            "same data (baseline); `sft+dpo`: SFT then DPO on the same pairs (the paper's third row)."
        ),
    )
    beta: float = Field(
        default=0.1, gt=0, description="DPO temperature of the preference part (not confirmed by the paper; DPO default)."
    )
    sft_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="lambda in L = lambda * L_SFT + (1 - lambda) * L_CL (paper: 0.5 in every experiment).",
    )
    english_nll: bool = Field(
        default=False,
        description="Also put NLL on English answers (the paper's ablation; lowers target win rate).",
    )
    length_normalize: bool = Field(
        default=False, description="Use mean instead of summed token log-probs in the preference loss."
    )
    sft_languages: Literal["both", "target", "english"] = Field(
        default="both",
        description="For `sft` (and the SFT phase of `sft+dpo`): which answers get NLL. Paper baseline: both.",
    )
    baselines: list[MethodName] = Field(
        default_factory=list,
        description=(
            "Extra methods trained on the same data and evaluated side by side, e.g. `[sft]` "
            "for the paper's CLO-vs-SFT comparison."
        ),
    )
