"""CLO, SFT and DPO losses against numbers computed by hand from the formulas in docs/method.md."""

import math

import pytest
import torch

from clo_recipes.methods.clo import CloLogps, clo_loss, cross_lingual_dpo_loss
from clo_recipes.methods.dpo import sigmoid_preference
from clo_recipes.methods.logps import IGNORE_INDEX, SequenceLogps, answer_logps
from clo_recipes.methods.sft import nll_loss, sft_loss


def neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def seq(sums, counts) -> SequenceLogps:
    return SequenceLogps(torch.tensor(sums, dtype=torch.float64), torch.tensor(counts))


# One sample: policy and reference summed log-probs of the four (query, answer) combinations.
POLICY = CloLogps(en_en=seq([-10.0], [5]), en_l=seq([-20.0], [10]), l_l=seq([-15.0], [6]), l_en=seq([-9.0], [4]))
REFERENCE = CloLogps(en_en=seq([-11.0], [5]), en_l=seq([-19.0], [10]), l_l=seq([-16.0], [6]), l_en=seq([-9.0], [4]))


def test_answer_logps_sums_only_answer_tokens():
    # vocab 3; position 0 predicts token 1 with p = 2/4, position 1 predicts token 2 with p = 1/5
    logits = torch.tensor([[[0.0, math.log(2), 0.0], [math.log(3), 0.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 2]])
    out = answer_logps(logits, labels)
    assert out.sum.item() == pytest.approx(math.log(1 / 2) + math.log(1 / 5))
    assert out.count.tolist() == [2]
    assert out.value(length_normalize=True).item() == pytest.approx(-math.log(10) / 2)

    prompt_masked = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2]])
    assert answer_logps(logits, prompt_masked).sum.item() == pytest.approx(math.log(1 / 5))
    # logits kept for the last two positions only (logits_to_keep=2): same answer log-prob
    assert answer_logps(logits[:, 1:], prompt_masked).sum.item() == pytest.approx(math.log(1 / 5))


def test_sigmoid_preference_hand_numbers():
    terms = sigmoid_preference(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]),
                               torch.tensor([-11.0]), beta=0.1)
    # chosen log-ratio +1, rejected -1: -log sigmoid(0.1 * 2)
    assert terms.losses.item() == pytest.approx(neg_log_sigmoid(0.2))
    assert terms.chosen_rewards.item() == pytest.approx(0.1)
    assert terms.rejected_rewards.item() == pytest.approx(-0.1)
    metrics = terms.metrics("en/")
    assert metrics["en/reward_accuracy"] == 1.0
    assert metrics["en/reward_margin"] == pytest.approx(0.2)
    assert metrics["en/chosen_logps"] == -10.0 and metrics["en/rejected_logps"] == -12.0


def test_clo_loss_hand_numbers():
    out = clo_loss(POLICY, REFERENCE, beta=0.1, sft_weight=0.5)
    english_pair = neg_log_sigmoid(0.1 * ((-10 + 11) - (-20 + 19)))  # y_en over y_l given x_en
    target_pair = neg_log_sigmoid(0.1 * ((-15 + 16) - (-9 + 9)))  # y_l over y_en given x_l
    preference = (english_pair + target_pair) / 2
    nll = 15 / 6  # target answers only, per token
    assert out.components["preference"].item() == pytest.approx(preference)
    assert out.components["nll"].item() == pytest.approx(nll)
    assert out.loss.item() == pytest.approx(0.5 * nll + 0.5 * preference)
    assert out.pairs["en"].losses.item() == pytest.approx(english_pair)
    assert out.pairs["target"].chosen_rewards.item() == pytest.approx(0.1)
    assert out.pairs["target"].rejected_rewards.item() == pytest.approx(0.0)

    weighted = clo_loss(POLICY, REFERENCE, beta=0.1, sft_weight=0.25)
    assert weighted.loss.item() == pytest.approx(0.25 * nll + 0.75 * preference)


def test_clo_english_nll_and_length_normalize():
    out = clo_loss(POLICY, REFERENCE, english_nll=True)
    assert out.components["nll"].item() == pytest.approx((15 + 10) / (6 + 5))

    out = clo_loss(POLICY, REFERENCE, beta=0.5, length_normalize=True)
    english_pair = neg_log_sigmoid(0.5 * ((-10 / 5 + 11 / 5) - (-20 / 10 + 19 / 10)))
    target_pair = neg_log_sigmoid(0.5 * ((-15 / 6 + 16 / 6) - (-9 / 4 + 9 / 4)))
    assert out.components["preference"].item() == pytest.approx((english_pair + target_pair) / 2)
    assert out.components["nll"].item() == pytest.approx(15 / 6)  # NLL is per token either way


def test_step_denominators_make_split_batches_add_up():
    torch.manual_seed(0)

    def random_logps(n):
        return CloLogps(*(seq(torch.randn(n).tolist(), torch.randint(1, 9, (n,)).tolist()) for _ in range(4)))

    policy, reference = random_logps(4), random_logps(4)
    whole = clo_loss(policy, reference, beta=0.3)

    def part(logps, rows):
        return CloLogps(*(SequenceLogps(getattr(logps, k).sum[rows], getattr(logps, k).count[rows])
                          for k in ("en_en", "en_l", "l_l", "l_en")))

    tokens = policy.l_l.count.sum()
    halves = [clo_loss(part(policy, rows), part(reference, rows), beta=0.3, num_pairs=8, num_tokens=tokens)
              for rows in (slice(0, 1), slice(1, 4))]
    assert sum(h.loss for h in halves).item() == pytest.approx(whole.loss.item())


def test_cross_lingual_dpo_is_the_preference_part_alone():
    out = cross_lingual_dpo_loss(POLICY, REFERENCE, beta=0.1)
    assert out.loss.item() == pytest.approx(clo_loss(POLICY, REFERENCE, beta=0.1).components["preference"].item())
    assert "nll" not in out.components


def test_sft_loss_pools_tokens_of_both_languages():
    target, english = seq([-6.0, -4.0], [3, 1]), seq([-2.0], [4])
    assert nll_loss(target).item() == pytest.approx(10 / 4)
    assert sft_loss([target, english]).loss.item() == pytest.approx(12 / 8)
    assert nll_loss(target, num_tokens=20).item() == pytest.approx(10 / 20)


def test_preference_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    sigmoid_preference(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1).loss().backward()
    # d/dc -log sigmoid(beta (c - r)) = -beta * sigmoid(-beta (c - r)) = -0.05 at c == r
    assert chosen.grad.item() == pytest.approx(-0.05)
    assert rejected.grad.item() == pytest.approx(0.05)
