"""The `nll` suite: held-out answer NLL against log-softmax computed by hand, the seeded
bootstrap, the evaluate stage writing it, and the report / compare tables showing it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from eval_context import make_context

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.evaluation.nll import answer_nlls, bootstrap_ratio_interval, nll_suite, summarise_nll

HELD_OUT = [
    {"id": "e1", "x_en": "What is the capital of France?", "y_en": "The capital of France is Paris.",
     "x_l": "¿Cuál es la capital de Francia?", "y_l": "La capital de Francia es París."},
    {"id": "e2", "x_en": "How do I boil an egg?", "y_en": "Boil it.",
     "x_l": "¿Cómo hiervo un huevo?", "y_l": "Hiérvelo."},
    {"id": "e3", "x_en": "Thank you very much.", "y_en": "You are welcome.",
     "x_l": "Muchas gracias.", "y_l": "De nada."},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from clo_recipes.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def loaded(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)


def _by_hand(model, tokenizer, query: str, answer: str) -> tuple[float, int]:
    """One unpadded forward of the chat-rendered conversation; NLL of the answer tokens
    (everything after the generation prompt, incl. `<|im_end|>\\n`) from our own log-softmax."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": query}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    completion = f"{answer}<|im_end|>\n"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    total = 0.0
    for offset, token in enumerate(answer_ids):
        position = len(prompt_ids) + offset - 1  # the logits at t predict token t + 1
        total -= float(logprobs[position, token])
    return total, len(answer_ids)


def test_batched_answer_nll_equals_hand_computed_log_softmax(loaded):
    model, tokenizer = loaded
    pairs = [(row["x_l"], row["y_l"]) for row in HELD_OUT] + [(row["x_en"], row["y_en"]) for row in HELD_OUT]
    scored = answer_nlls(model, tokenizer, pairs, batch_size=4)  # mixed lengths: left padding in play
    for (query, answer), got in zip(pairs, scored):
        want_nll, want_tokens = _by_hand(model, tokenizer, query, answer)
        assert got[1] == want_tokens
        assert got[0] == pytest.approx(want_nll, rel=1e-4)
        assert 0 < got[0] / got[1] < 2 * math.log(len(tokenizer))  # a random model is near log(vocab)


def test_answer_nll_at_a_large_vocabulary_streams_and_equals_the_full_logits_in_fp64(loaded):
    """From 32,768 tokens of vocabulary the NLL takes the streamed log-prob path (as training and
    the reference stage do): equal to the full logits' log-softmax to fp64 rounding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = loaded
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).double().eval()
    pairs = [(row["x_l"], row["y_l"]) for row in HELD_OUT] + [(row["x_en"], row["y_en"]) for row in HELD_OUT]
    scored = answer_nlls(model, tokenizer, pairs, batch_size=4)
    assert model._clo_logps_path.streamed, model._clo_logps_path.reason
    for (query, answer), got in zip(pairs, scored):
        want_nll, want_tokens = _by_hand(model, tokenizer, query, answer)
        assert got[1] == want_tokens
        # about 10 tokens of |log p| ~ 10.4 each; fp64 rounding plus left padding's different
        # attention blocking stay many orders of magnitude below 1e-9
        assert got[0] == pytest.approx(want_nll, abs=1e-9)


def test_pairs_longer_than_max_length_are_left_out(loaded):
    model, tokenizer = loaded
    short, long = ("Hi", "Hola."), ("Tell me " * 40, "Paris " * 40)
    scored = answer_nlls(model, tokenizer, [short, long], max_length=48)
    assert scored[0] is not None and scored[1] is None


def test_suite_is_token_weighted_with_a_seeded_bootstrap(loaded):
    model, tokenizer = loaded
    metrics, details = nll_suite(model, tokenizer, HELD_OUT, "es", batch_size=2)
    assert set(metrics) == {"es", "en"}
    for lang in ("es", "en"):
        rows = [d for d in details if d["lang"] == lang]
        assert [d["id"] for d in rows] == ["e1", "e2", "e3"]
        mean = sum(d["nll"] for d in rows) / sum(d["tokens"] for d in rows)
        stats = metrics[lang]
        assert stats["nll"] == pytest.approx(mean) and stats["ppl"] == pytest.approx(math.exp(mean))
        assert stats["low"] <= stats["nll"] <= stats["high"] and stats["n"] == 3
    again, _ = nll_suite(model, tokenizer, HELD_OUT, "es", batch_size=3)
    assert again["es"]["low"] == pytest.approx(metrics["es"]["low"], rel=1e-5)  # deterministic


def test_bootstrap_interval_brackets_the_ratio_and_shrinks_with_more_samples():
    nlls, tokens = [2.0, 4.0, 9.0, 1.0], [2, 2, 3, 1]
    low, high = bootstrap_ratio_interval(nlls, tokens)
    assert low < sum(nlls) / sum(tokens) < high
    assert bootstrap_ratio_interval(nlls, tokens) == (low, high)  # seeded
    big_low, big_high = bootstrap_ratio_interval(nlls * 25, tokens * 25)
    assert big_high - big_low < (high - low) / 3  # ~ 1/sqrt(25) of the width
    assert low >= min(n / t for n, t in zip(nlls, tokens)) and high <= max(n / t for n, t in zip(nlls, tokens))
    assert summarise_nll([], [])["nll"] is None


def test_evaluate_stage_writes_nll_and_the_report_shows_it(tiny, tmp_path):
    from clo_recipes.evaluation.compare import relative_metrics
    from clo_recipes.evaluation.report import build_report, fmt_share, headline, render_markdown
    from clo_recipes.stages import evaluate

    recipe = {"model": {"base": str(tiny)}, "method": {"name": "clo"}, "adapter": {"kind": "lora"},
              "eval": {"suites": ["nll"], "max_prompts": 2, "batch_size": 2}}
    pairs = tmp_path / "pairs-done"
    pairs.mkdir(parents=True)
    write_jsonl(pairs / "eval.jsonl", HELD_OUT)
    ctx = make_context(recipe, "evaluate-base", tmp_path, {"pairs": pairs})
    outputs = evaluate.run(ctx)
    metrics = json.loads((ctx.work_dir / "metrics.json").read_text())
    nll = metrics["suites"]["nll"]
    assert nll["es"]["n"] == 2 and nll["en"]["n"] == 2  # max_prompts applies
    details = list(read_jsonl(ctx.work_dir / "nll_details.jsonl"))
    assert len(details) == 4
    assert outputs["nll_es"] == pytest.approx(nll["es"]["nll"])
    assert not (ctx.work_dir / "answers.jsonl").exists()  # no generation for this suite

    report = build_report(name="r", language="es", method="clo", baselines=[], evaluations={"base": metrics},
                          judge=None, examples=[])
    row = headline(report)["base"]
    assert row["nll_es"]["value"] == nll["es"]["nll"]
    text = render_markdown(report)
    assert "## Held-out answer likelihood" in text
    assert f"{nll['es']['nll']:.3f} [{nll['es']['low']:.3f}–{nll['es']['high']:.3f}]" in text
    assert fmt_share(row["nll_en"]) == f"{nll['en']['nll']:.3f} [{nll['en']['low']:.3f}–{nll['en']['high']:.3f}]"
    assert set(relative_metrics(row, "es")) == {"nll", "nll_en"}


def test_nll_is_a_default_suite():
    from clo_recipes.recipe.schema.evaluation import EvalSection

    assert "nll" in EvalSection().suites
