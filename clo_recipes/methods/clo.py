"""Cross-Lingual Optimization (Lee et al., ACL 2025), as docs/method.md describes it.

Each sample (x_en, y_en, x_l, y_l) yields four answer log-probs, named query-answer:

    en_en = log pi(y_en | x_en)    en_l = log pi(y_l | x_en)
    l_l   = log pi(y_l  | x_l)     l_en = log pi(y_en | x_l)

and two preference pairs sharing the two answers:

    English input: x_en -> chosen y_en over rejected y_l    (en_en vs en_l)
    Target input:  x_l  -> chosen y_l  over rejected y_en   (l_l vs l_en)

    L_CLO = sft_weight * NLL(y_l | x_l) + (1 - sft_weight) * L_CL

L_CL is the DPO sigmoid loss averaged over both pairs of every sample, against the frozen
starting model's log-probs (precomputed). `english_nll` adds NLL on y_en | x_en (the paper's
ablation); `length_normalize` uses per-token mean log-probs in the preference part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dpo import PreferenceTerms, sigmoid_preference
from .logps import SequenceLogps
from .output import LossOutput
from .sft import nll_loss

QUADRUPLE = ("en_en", "en_l", "l_l", "l_en")


@dataclass
class CloLogps:
    """The four answer log-probs of a batch of samples, each a `SequenceLogps` of `(samples,)`."""

    en_en: SequenceLogps
    en_l: SequenceLogps
    l_l: SequenceLogps
    l_en: SequenceLogps


def preference_pairs(policy: CloLogps, reference: CloLogps, *, beta: float,
                     length_normalize: bool = False) -> dict[str, PreferenceTerms]:
    """The two cross-lingual pairs of every sample: English input and target input."""

    def values(logps: CloLogps, name: str) -> torch.Tensor:
        return getattr(logps, name).value(length_normalize)

    return {
        "en": sigmoid_preference(values(policy, "en_en"), values(policy, "en_l"),
                                 values(reference, "en_en"), values(reference, "en_l"), beta),
        "target": sigmoid_preference(values(policy, "l_l"), values(policy, "l_en"),
                                     values(reference, "l_l"), values(reference, "l_en"), beta),
    }


def preference_loss(pairs: dict[str, PreferenceTerms], num_pairs: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Mean sigmoid loss over all pairs (both pairs of each sample count once each)."""
    losses = torch.cat([terms.losses for terms in pairs.values()])
    return losses.sum() / (losses.numel() if num_pairs is None else num_pairs)


def clo_loss(policy: CloLogps, reference: CloLogps, *, beta: float = 0.1, sft_weight: float = 0.5,
             english_nll: bool = False, length_normalize: bool = False,
             num_pairs: int | float | torch.Tensor | None = None,
             num_tokens: int | float | torch.Tensor | None = None) -> LossOutput:
    """L = sft_weight * NLL + (1 - sft_weight) * L_CL for a batch of CLO samples.

    `num_pairs` (2 per sample) and `num_tokens` (NLL answer tokens) default to this batch's;
    a training loop passes the counts of the whole optimizer step.
    """
    pairs = preference_pairs(policy, reference, beta=beta, length_normalize=length_normalize)
    preference = preference_loss(pairs, num_pairs)
    nll = nll_loss([policy.l_l, policy.en_en] if english_nll else [policy.l_l], num_tokens)
    loss = sft_weight * nll + (1 - sft_weight) * preference
    return LossOutput(loss, {"nll": nll.detach(), "preference": preference.detach()}, pairs)


def cross_lingual_dpo_loss(policy: CloLogps, reference: CloLogps, *, beta: float = 0.1, length_normalize: bool = False,
             num_pairs: int | float | torch.Tensor | None = None) -> LossOutput:
    """Plain DPO on the same two cross-lingual pairs (the DPO phase of the `sft+dpo` baseline)."""
    pairs = preference_pairs(policy, reference, beta=beta, length_normalize=length_normalize)
    preference = preference_loss(pairs, num_pairs)
    return LossOutput(preference, {"preference": preference.detach()}, pairs)
