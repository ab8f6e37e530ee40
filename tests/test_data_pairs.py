"""The pairs stage, and source -> translate -> pairs on the shipped demo data."""

from __future__ import annotations

from pathlib import Path

import pytest

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.runner.testing import make_context
from clo_recipes.stages.pairs import summarise

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from clo_recipes.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def test_summarise_uses_nearest_rank_percentiles():
    assert summarise([5, 1, 3, 2, 4]) == {"mean": 3.0, "p50": 3, "p95": 5, "max": 5}
    assert summarise(list(range(1, 101)))["p95"] == 95
    assert summarise([]) == {"mean": 0.0, "p50": 0, "p95": 0, "max": 0}


def test_pairs_stage_writes_quadruples_and_token_lengths(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from clo_recipes.stages import pairs

    translated = tmp_path / "translate-done"
    translated.mkdir()
    rows = [{"id": "a", "prompt": "What is the capital of France?", "response": "The capital of France is Paris.",
             "prompt_l": "¿Cuál es la capital de Francia?", "response_l": "La capital de Francia es París."},
            {"id": "b", "prompt": "How do I boil an egg?", "response": "Put the egg in boiling water for eight minutes.",
             "prompt_l": "¿Cómo hiervo un huevo?", "response_l": "Pon el huevo en agua hirviendo durante ocho minutos."}]
    write_jsonl(translated / "translated.jsonl", rows)
    write_jsonl(translated / "eval_translated.jsonl", rows[:1])
    ctx = make_context({"language": "es", "model": {"base": str(tiny_model)}}, "pairs", tmp_path,
                       inputs={"translate": translated})
    stats = pairs.run(ctx)
    train = list(read_jsonl(ctx.work_dir / "train.jsonl"))
    assert train[1] == {"id": "b", "x_en": "How do I boil an egg?", "y_en": "Put the egg in boiling water for eight minutes.",
                        "x_l": "¿Cómo hiervo un huevo?", "y_l": "Pon el huevo en agua hirviendo durante ocho minutos."}
    assert [row["id"] for row in read_jsonl(ctx.work_dir / "eval.jsonl")] == ["a"]
    assert (stats["pairs"], stats["eval_pairs"]) == (2, 1)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    en_pairs = [count(r["prompt"]) + count(r["response"]) for r in rows]
    es_pairs = [count(r["prompt_l"]) + count(r["response_l"]) for r in rows]
    assert stats["tokens"]["en"]["pair"] == summarise(en_pairs)
    assert stats["tokens"]["es"]["query"]["max"] == max(count(r["prompt_l"]) for r in rows)
    assert stats["tokens"]["target_to_english_tokens"] == round((sum(es_pairs) / 2) / (sum(en_pairs) / 2), 3)


def test_demo_data_flows_from_source_to_pairs(tmp_path, tiny_model):
    from clo_recipes.stages import pairs, source, translate

    data = REPO / "recipes" / "data"
    recipe = {"language": "it", "model": {"base": str(tiny_model)},
              "data": {"source": str(data / "demo_en.jsonl"), "format": "pairs", "samples": 128, "eval_samples": 40},
              "translation": {"backend": "memory", "memory_file": str(data / "demo_memory_it.jsonl")}}
    source_ctx = make_context(recipe, "source", tmp_path)
    source.run(source_ctx)
    translate_ctx = make_context(recipe, "translate", tmp_path, inputs={"source-x": source_ctx.work_dir})
    translated = translate.run(translate_ctx)
    assert (translated["translated"], translated["eval_translated"], translated["dropped"]) == (128, 40, 0)
    pairs_ctx = make_context(recipe, "pairs", tmp_path, inputs={"translate-x": translate_ctx.work_dir})
    stats = pairs.run(pairs_ctx)
    assert (stats["pairs"], stats["eval_pairs"]) == (128, 40)
    train = list(read_jsonl(pairs_ctx.work_dir / "train.jsonl"))
    sampled = list(read_jsonl(source_ctx.work_dir / "samples.jsonl"))
    assert [row["id"] for row in train] == [row["id"] for row in sampled]
    assert train[0]["x_en"] == sampled[0]["prompt"] and train[0]["x_l"] != train[0]["x_en"]
