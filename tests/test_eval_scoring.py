"""Statistics, fidelity counting and multiple-choice log-likelihood scoring."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from clo_recipes.errors import StageError
from clo_recipes.evaluation.fidelity import fidelity_metrics
from clo_recipes.evaluation.multiple_choice import (
    MCQuestion, encode_pair, load_mc_file, loglikelihoods, resolve_mc_sets, score_questions)
from clo_recipes.evaluation.stats import share_with_interval, wilson_interval


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clo_recipes.testing.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny"))
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


# ----------------------------------------------------------------------------- statistics
def test_wilson_interval_matches_hand_computation():
    # 8 of 10, z = 1.96: centre = (0.8 + 0.19208) / 1.38416, half = 1.96/1.38416 * sqrt(0.016 + 0.009604)
    low, high = wilson_interval(8, 10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.8 * 0.2 / 10 + z * z / 400)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # textbook value


def test_wilson_interval_stays_inside_unit_range_at_the_edges():
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 5)[1] < 0.5
    assert wilson_interval(5, 5)[1] == 1.0 and wilson_interval(5, 5)[0] > 0.5
    assert share_with_interval(0, 0)["share"] is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_fractional_successes_give_a_conservative_interval():
    # Judge scores with ties: mean 0.5 over 4 prompts is as uncertain as 2 wins of 4, at most.
    assert share_with_interval(2.0, 4)["low"] == pytest.approx(wilson_interval(2, 4)[0])
    low, high = wilson_interval(4, 4)
    assert high == 1.0 and low == pytest.approx(0.5101, abs=1e-4)


# ----------------------------------------------------------------------------- fidelity
def test_fidelity_counts_answers_in_the_prompt_language():
    pairs = [("th", "th"), ("th", "en"), ("th", "th"), ("th", "unknown"), ("en", "en"), ("en", "en")]
    metrics = fidelity_metrics(pairs)
    assert metrics["th"]["k"] == 2 and metrics["th"]["n"] == 4 and metrics["th"]["share"] == 0.5
    assert metrics["th"]["detected"] == {"th": 2, "en": 1, "unknown": 1}
    assert metrics["en"]["share"] == 1.0 and metrics["en"]["n"] == 2
    assert metrics["th"]["low"] < 0.5 < metrics["th"]["high"]


def test_answer_languages_come_from_the_shared_language_id():
    from clo_recipes.evaluation.fidelity import detect_answer_languages

    detected = detect_answer_languages(["The capital of France is Paris, a large city.",
                                        "La capital de Francia es París, una ciudad grande.", "", "1234"])
    assert [code for code, _ in detected] == ["en", "es", "unknown", "unknown"]
    assert detected[0][1] > 0.5 and detected[2][1] == 0.0


# ----------------------------------------------------------------------------- multiple choice
class CharTokenizer:
    """One token per character; no special tokens (like a tokenizer without BOS)."""

    bos_token_id = None
    pad_token_id = 0

    def __init__(self, alphabet: str):
        self.vocab = {ch: i + 1 for i, ch in enumerate(sorted(set(alphabet)))}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab[ch] for ch in text]


class BigramModel(torch.nn.Module):
    """P(next | previous) from a fixed table: log-probabilities can be computed by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def _bigram(tokenizer: CharTokenizer, rows: dict[str, dict[str, float]]) -> BigramModel:
    """A table whose rows are log-probabilities: given rows hold the listed probabilities, the
    rest of each row's mass is spread evenly."""
    size = len(tokenizer.vocab) + 1
    table = torch.full((size, size), math.log(1 / size))
    for previous, nexts in rows.items():
        rest = (1 - sum(nexts.values())) / (size - len(nexts))
        row = torch.full((size,), math.log(rest))
        for ch, p in nexts.items():
            row[tokenizer.vocab[ch]] = math.log(p)
        table[tokenizer.vocab[previous]] = row
    return BigramModel(table)


QUESTION = MCQuestion("q1", "Pick", ("C", "Be", "Z"), answer=0)


def _toy():
    tokenizer = CharTokenizer("Question: Pick\nAnswer CBeZ")
    model = _bigram(tokenizer, {":": {" ": 0.5}, " ": {"B": 0.2, "C": 0.6, "Z": 0.1}, "B": {"e": 0.99}})
    return model, tokenizer


def test_loglikelihood_matches_hand_computed_case():
    model, tokenizer = _toy()
    context = "Question: Pick\nAnswer:"
    results = loglikelihoods(model, tokenizer, [(context, " C"), (context, " Be"), (context, " Z")], batch_size=2)
    assert results[0] == (pytest.approx(math.log(0.5) + math.log(0.6)), 2)
    assert results[1] == (pytest.approx(math.log(0.5) + math.log(0.2) + math.log(0.99)), 3)
    assert results[2] == (pytest.approx(math.log(0.5) + math.log(0.1)), 2)


def test_acc_picks_highest_likelihood_and_acc_norm_divides_by_length():
    model, tokenizer = _toy()
    scored = score_questions(model, tokenizer, [QUESTION])
    detail = scored["details"][0]
    # "C": log .5 + log .6 = -1.204 beats "Be": -2.312 in total ...
    assert detail["pick"] == 0 and scored["acc"] == 1.0
    # ... but per character "Be" (-2.312 / 2 = -1.156) beats "C" (-1.204 / 1).
    assert detail["pick_norm"] == 1 and scored["acc_norm"] == 0.0
    assert scored["n"] == 1


def test_encode_pair_moves_trailing_space_to_the_continuation():
    _, tokenizer = _toy()
    context_ids, continuation_ids = encode_pair(tokenizer, "Answer: ", "C")
    assert context_ids == tokenizer.encode("Answer:")
    assert continuation_ids == tokenizer.encode(" C")


def test_batched_scores_equal_one_by_one_forward_on_tiny_llama(tiny_model):
    model, tokenizer = tiny_model
    requests = [("Question: What is the capital of France?\nAnswer:", " Paris"),
                ("Question: How do I boil an egg?\nAnswer:", " Put the egg in boiling water"),
                ("Question: El gato?\nAnswer:", " El perro corre en el parque.")]
    batched = loglikelihoods(model, tokenizer, requests, batch_size=3)
    for (context, continuation), (total, count) in zip(requests, batched):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        ids = torch.tensor([context_ids + continuation_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        expected = sum(logprobs[len(context_ids) + i - 1, tok].item() for i, tok in enumerate(continuation_ids))
        assert count == len(continuation_ids)
        assert total == pytest.approx(expected, abs=1e-4)


def _write_set(path, questions):
    path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    return path


def test_mc_files_load_and_report_bad_lines(tmp_path):
    good = _write_set(tmp_path / "quiz.es.jsonl", [
        {"id": "mc-001", "question": "¿Cuál es la capital de Francia?", "choices": ["París", "Roma"], "answer": 0}])
    sets, skipped = resolve_mc_sets([str(good)], "es")
    assert [(s.name, s.lang, len(s.questions)) for s in sets] == [("quiz.es", "es", 1)]
    assert skipped == []
    bad = _write_set(tmp_path / "bad.jsonl", [{"id": "x", "question": "q", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(StageError, match=r"bad.jsonl:1: needs 2\+ choices"):
        load_mc_file(bad)
    with pytest.raises(StageError, match="not found"):
        resolve_mc_sets([str(tmp_path / "missing.jsonl")], "es")


def test_builtin_sets_for_a_language_without_file_are_skipped(monkeypatch, tmp_path):
    from clo_recipes.evaluation import multiple_choice

    _write_set(tmp_path / "en.jsonl", [{"id": "mc-001", "question": "2+2?", "choices": ["4", "5"], "answer": 0}])
    monkeypatch.setattr(multiple_choice, "MC_SETS_DIR", tmp_path)
    sets, skipped = resolve_mc_sets(["builtin"], "yo")
    assert [(s.name, s.lang) for s in sets] == [("builtin", "en")]
    assert skipped == [{"set": "builtin", "lang": "yo", "reason": "no built-in MC set for 'yo'"}]
