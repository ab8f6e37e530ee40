"""The training objective of each phase: which sequences it needs and how they become a loss.

`clo` (the paper), `sft` (the baseline) and `dpo` (second phase of `sft+dpo`) share the
batch layout of `training.batch`; an objective only picks sequence names, step-level
denominators and the loss function from `clo_recipes.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..methods.clo import CloLogps, clo_loss, cross_lingual_dpo_loss
from ..methods.output import LossOutput
from ..methods.sft import sft_loss
from .data import PREFERENCE_SEQUENCES, SFT_SEQUENCES, Example


@dataclass(frozen=True)
class Denominators:
    """What the losses of one optimizer step average over, across all its micro-batches and ranks."""

    pairs: int
    tokens: int


@dataclass(frozen=True)
class Objective:
    name: str  # clo | sft | dpo
    names: tuple[str, ...]  # sequences per sample
    nll_names: tuple[str, ...]  # sequences whose answers get NLL
    beta: float = 0.1
    sft_weight: float = 0.5
    english_nll: bool = False
    length_normalize: bool = False

    @property
    def needs_reference(self) -> bool:
        return self.name in ("clo", "dpo")

    def denominators(self, examples: list[Example]) -> Denominators:
        pairs = 2 * len(examples) if self.needs_reference else 0
        tokens = sum(example.sequences[name].answer_length for example in examples for name in self.nll_names)
        return Denominators(pairs, tokens)

    def loss(self, logps: dict[str, Any], reference: CloLogps | None, denominators: Denominators) -> LossOutput:
        if self.name == "sft":
            return sft_loss([logps[name] for name in self.nll_names], denominators.tokens)
        policy = CloLogps(**logps)
        if self.name == "dpo":
            return cross_lingual_dpo_loss(policy, reference, beta=self.beta, length_normalize=self.length_normalize,
                                          num_pairs=denominators.pairs)
        return clo_loss(policy, reference, beta=self.beta, sft_weight=self.sft_weight, english_nll=self.english_nll,
                        length_normalize=self.length_normalize, num_pairs=denominators.pairs,
                        num_tokens=denominators.tokens)


def objective_for(phase: str, method: Any) -> Objective:
    """The objective of a training phase ("clo", "sft" or "dpo") from the recipe's `method:`."""
    if phase == "clo":
        nll = ("l_l", "en_en") if method.english_nll else ("l_l",)
        return Objective("clo", PREFERENCE_SEQUENCES, nll, method.beta, method.sft_weight, method.english_nll,
                         method.length_normalize)
    if phase == "dpo":
        return Objective("dpo", PREFERENCE_SEQUENCES, (), method.beta, 0.0, False, method.length_normalize)
    if phase == "sft":
        names = SFT_SEQUENCES[method.sft_languages]
        return Objective("sft", names, names)
    raise ValueError(f"unknown training phase {phase!r}")


def phases_of(arm: str) -> tuple[str, ...]:
    """Training phases of a method arm: `sft+dpo` is SFT, then DPO with the SFT model as reference."""
    return {"clo": ("clo",), "sft": ("sft",), "sft+dpo": ("sft", "dpo")}[arm]
