"""The DPO sigmoid preference loss (Rafailov et al., 2023) against a frozen reference.

    loss = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_r|x) - log pi_ref(y_r|x))])

Rewards are the implicit DPO rewards beta * (log pi - log pi_ref) of each response.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PreferenceTerms:
    """Per-pair results of the sigmoid loss (all `(pairs,)`)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor

    def loss(self, num_pairs: int | float | torch.Tensor | None = None) -> torch.Tensor:
        """Mean over pairs; `num_pairs` overrides the denominator (pairs of the whole step)."""
        return self.losses.sum() / (self.losses.numel() if num_pairs is None else num_pairs)

    def metric_sums(self, prefix: str) -> dict[str, float]:
        """Sums over pairs (plus `{prefix}pairs`), so batches and processes add up before averaging."""
        margins = (self.chosen_rewards - self.rejected_rewards).detach()
        return {
            f"{prefix}pairs": float(margins.numel()),
            f"{prefix}reward_accuracy": (margins > 0).float().sum().item(),
            f"{prefix}reward_margin": margins.sum().item(),
            f"{prefix}chosen_reward": self.chosen_rewards.detach().sum().item(),
            f"{prefix}rejected_reward": self.rejected_rewards.detach().sum().item(),
            f"{prefix}chosen_logps": self.chosen_logps.detach().sum().item(),
            f"{prefix}rejected_logps": self.rejected_logps.detach().sum().item(),
        }

    def metrics(self, prefix: str) -> dict[str, float]:
        """Reward accuracy, reward margin, rewards and chosen/rejected log-probs, averaged over pairs."""
        return average_metric_sums(self.metric_sums(prefix), prefix)


def average_metric_sums(sums: dict[str, float], prefix: str) -> dict[str, float]:
    """Turn `metric_sums` (possibly added over batches) into means over pairs."""
    pairs = sums.get(f"{prefix}pairs", 0.0)
    if not pairs:
        return {}
    return {key: value / pairs for key, value in sums.items() if key != f"{prefix}pairs"}


def sigmoid_preference(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                       reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
                       beta: float) -> PreferenceTerms:
    """DPO sigmoid loss per pair from (summed or length-normalised) sequence log-probs."""
    chosen_logratios = policy_chosen - reference_chosen.to(policy_chosen)
    rejected_logratios = policy_rejected - reference_rejected.to(policy_rejected)
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return PreferenceTerms(
        losses=losses,
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
        chosen_logps=policy_chosen.detach(),
        rejected_logps=policy_rejected.detach(),
    )
