"""bf16 for real on CPU: the same engine code as on a GPU (bf16 weights, fp32 trainable masters,
accelerate's bf16 autocast) runs the reference stage, two CLO training steps of the attention
layers next to frozen bf16 weights, and agrees with the fp32 run within what
bf16's precision allows; a CPU without bf16 instructions is refused at plan time."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState
from test_training_stages import REPO, metrics, pairs, reference_dir, tiny, train  # noqa: F401 - fixtures
from training_data import training_recipe

from clo_recipes.files import read_jsonl
from clo_recipes.hardware.detect import cpu_bf16

# bf16 keeps 8 significant bits: a rounding moves a value by at most u = 2^-8 of itself.
BF16_UNIT = 2.0 ** -8


def precision_recipe(tiny: Path, precision: str) -> dict:
    recipe = training_recipe(tiny, "clo", max_steps=2, save_steps=2)
    recipe["adapter"] = {"kind": "full", "trainable": "attention"}  # fp32 masters next to frozen bf16 weights
    recipe["hardware"]["precision"] = precision
    return recipe


def largest_logit(tiny: Path, pairs: Path) -> float:
    """max |logit| of the fp32 model over every sequence the reference stage scores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clo_recipes.training.batch import pad_left
    from clo_recipes.training.chat import ChatRenderer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    rows = list(read_jsonl(pairs / "train.jsonl"))
    texts = [(row[f"x_{q}"], row[f"y_{a}"]) for row in rows for q, a in (("en", "en"), ("en", "l"), ("l", "l"), ("l", "en"))]
    ids, mask, positions, _ = pad_left(ChatRenderer(tokenizer).render_many(texts), tokenizer.pad_token_id or 0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    return float(logits.abs().max())


def tolerance(tokens: int, layers: int, zmax: float) -> float:
    """Summed answer log-prob, bf16 vs fp32. bf16 keeps 8 significant bits, so each rounding
    moves a value by at most u = 2^-8 of itself; a forward rounds the residual stream once per
    layer and the logits once, so a logit moves by at most about (layers + 1) u zmax, and a
    log-softmax entry by at most twice the largest logit move; summed over the answer tokens."""
    return tokens * 2 * (layers + 1) * BF16_UNIT * zmax


@pytest.mark.skipif(cpu_bf16() is False, reason="this CPU has no bf16 instructions (the plan-time error is tested)")
def test_bf16_reference_and_training_agree_with_fp32_within_bf16_precision(tiny, pairs, tmp_path):
    layers = 2  # build_tiny_llama's depth
    zmax = largest_logit(tiny, pairs)
    runs = {}
    for precision in ("fp32", "bf16"):
        AcceleratorState._reset_state(reset_partial_state=True)  # one precision per process otherwise
        recipe = precision_recipe(tiny, precision)
        reference = reference_dir(recipe, tmp_path / precision, pairs)
        ctx, outputs = train(recipe, tmp_path / precision, pairs, reference=reference)
        runs[precision] = (list(read_jsonl(reference / "reference.jsonl")), metrics(ctx), outputs)
    AcceleratorState._reset_state(reset_partial_state=True)
    (ref32, rows32, _), (ref16, rows16, out16) = runs["fp32"], runs["bf16"]
    assert [r["id"] for r in ref16] == [r["id"] for r in ref32] and ref32
    checked, worst = 0, 0.0
    for one, other in zip(ref32, ref16):
        for name, value in one["logps"].items():  # summed answer log-probs of the 4 CLO sequences
            got, bound = other["logps"][name], tolerance(one["tokens"][name], layers, zmax)
            assert abs(got - value) <= bound, (one["id"], name, value, got, bound)
            assert got != value  # bf16 really ran: sums of bf16-rounded terms never equal the fp32 sum
            checked += 1
            worst = max(worst, abs(got - value) / bound)
    assert checked >= 8
    assert [row["step"] for row in rows16] == [1, 2] and all(math.isfinite(row["loss"]) for row in rows16)
    # step 1: policy == reference in both runs, so the CLO loss is the same function of log-prob
    # differences (two sequences each, at most max_length = 64 tokens): bounded like them
    loss32, loss16 = rows32[0]["loss"], rows16[0]["loss"]
    assert abs(loss16 - loss32) <= 2 * tolerance(64, layers, zmax), (loss32, loss16)
    print("bf16 vs fp32: worst reference log-prob error / tolerance", worst, "losses", loss32, loss16)
    assert out16["trainable_parameters"] == runs["fp32"][2]["trainable_parameters"]


# `clo-recipe plan` on a CPU whose flags lack bf16 (the detection patched to say so).
WITHOUT_BF16 = """
import sys
import clo_recipes.hardware.detect as detect
detect.cpu_bf16 = lambda *args: False
from clo_recipes.cli import main
sys.argv = ["clo-recipe", *sys.argv[1:]]
main()
"""


def test_bf16_on_a_cpu_without_bf16_is_a_plan_time_error_naming_the_field():
    demo = str(REPO / "recipes" / "demo_cpu.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-c", WITHOUT_BF16, "plan", demo, "--set", "hardware.precision=bf16"],
                            capture_output=True, text=True, timeout=120, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output
    assert "hardware.precision: bf16 needs a CPU with bf16 instructions" in output
    assert "use hardware.precision: fp32" in output and len(output.splitlines()) < 25
    fp32 = subprocess.run([sys.executable, "-c", WITHOUT_BF16, "plan", demo], capture_output=True, text=True,
                          timeout=120, env=env)
    assert fp32.returncode == 0, fp32.stdout + fp32.stderr


def test_cpu_bf16_reads_the_flags(tmp_path):
    intel, old, arm = tmp_path / "intel", tmp_path / "old", tmp_path / "arm"
    intel.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    old.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert cpu_bf16(str(intel)) is True and cpu_bf16(str(old)) is False and cpu_bf16(str(arm)) is True
    assert cpu_bf16(str(tmp_path / "missing")) is None
