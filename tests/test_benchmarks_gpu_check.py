"""benchmarks/gpu_check.py, the prepared GPU check, run end to end in its CPU mode (tiny
model), so the script a GPU machine will run cannot rot; and its FLOP formula by hand."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PEAK_TFLOPS = 0.5  # a stated peak, so the MFU arithmetic runs on CPU too


def _shapes():
    """benchmarks/shapes.py (the FLOP formula), loaded by path: benchmarks/ is not a package."""
    spec = importlib.util.spec_from_file_location("benchmark_shapes", REPO / "benchmarks" / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "nested" / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-tiny", "--out", str(out),
                           "--peak-tflops", str(PEAK_TFLOPS)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout, json.loads(out.read_text())


def test_cpu_mode_runs_the_cuda_tests_as_skips(cpu_run):
    _, data = cpu_run
    tests = data["tests"]
    assert "tests/test_hardware_gpu.py" in tests["files"]
    assert tests["returncode"] == 0 and tests["failures"] == 0 and tests["errors"] == 0
    assert tests["tests"] >= 1 and tests["skipped"] == tests["tests"]  # no CUDA here: every one skips


def test_cpu_mode_runs_its_parts_by_value(cpu_run):
    _, data = cpu_run
    parts = [key for key in data if key in ("clo", "qlora", "tests", "trl_dpo")]
    assert parts == ["clo", "qlora", "tests", "trl_dpo"]  # the CLO step first, TRL's comparison last


@pytest.mark.parametrize("name", ["clo", "qlora", "trl_dpo"])
def test_cpu_mode_trains_every_side_with_sane_figures(cpu_run, name):
    _, data = cpu_run
    result = data[name]
    assert "error" not in result, result.get("traceback")
    assert result["timed_steps"] == data["setup"]["steps"] - 1
    assert result["tokens_per_second"] > 0 and result["timed_tokens"] > 0
    assert result["tokens_per_second"] == pytest.approx(result["timed_tokens"] / (result["seconds_per_step"]
                                                                                  * result["timed_steps"]))
    # the reference is the starting model, so both preference losses start at ln 2
    assert result["first_preference_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert result["memory"]["peak_gib"] > 0
    assert result["mfu"] == pytest.approx(result["model_tflops_per_second"] / PEAK_TFLOPS)
    assert result["hfu"] > result["mfu"] > 0  # checkpointing recomputes the forward pass


def test_cpu_mode_compares_memory_with_plan_and_gives_ratios(cpu_run):
    stdout, data = cpu_run
    clo, trl = data["clo"], data["trl_dpo"]
    estimate = clo["plan_estimate"]
    assert estimate["total_gib"] > estimate["without_cuda_context_gib"] > 0
    assert estimate["trainable_parameters"] == clo["trainable_parameters"]  # plan and the trainer agree
    assert clo["peak_over_estimate"] == pytest.approx(clo["memory"]["peak_gib"] / estimate["without_cuda_context_gib"])
    ratios = data["ratios"]
    assert ratios["tokens/s engine CLO / TRL DPOTrainer"] == pytest.approx(
        clo["tokens_per_second"] / trl["tokens_per_second"])
    assert ratios["peak memory engine CLO / plan estimate"] == clo["peak_over_estimate"]
    assert "tokens/s engine CLO / TRL DPOTrainer:" in stdout and "engine QLoRA" in stdout


def test_cpu_mode_streams_log_probs_through_the_training_code(cpu_run):
    # the tiny vocabulary is at the streaming threshold (32,768), as the 8B shape's is above it
    stdout, data = cpu_run
    for name in ("clo", "qlora"):
        assert data[name]["log_probs_streamed"] is True
        assert data[name]["log_probs"] == "streamed: vocabulary 32,768"
    assert "log-prob path" in stdout and "streamed" in stdout


def test_cpu_mode_records_parameter_bytes_by_dtype(cpu_run):
    _, data = cpu_run
    # tiny Llama: embeddings and head 2 x 32768 x 64; per layer q 64x64, k and v 64x32, o 64x64
    # (12,288 attention weights), gate/up/down 3 x 64x128 (24,576), two norms 2 x 64; final norm 64
    embed_head, attention, mlp, norms = 2 * 32768 * 64, 2 * 12288, 2 * 24576, 2 * 128 + 64
    assert data["clo"]["parameter_bytes_by_dtype"] == {  # attention trained in fp32, the rest stored bf16
        "torch.float32": 4 * attention, "torch.bfloat16": 2 * (embed_head + mlp + norms)}
    # QLoRA: every decoder linear in NF4 (two weights a byte), LoRA r=16 on q, k, v, o in fp32:
    # per layer 16 x ((64+64) + (64+32) + (64+32) + (64+64)) = 7,168 adapter weights
    assert data["qlora"]["parameter_bytes_by_dtype"] == {
        "torch.uint8": (attention + mlp) // 2, "torch.float32": 4 * 2 * 7168, "torch.bfloat16": 2 * (embed_head + norms)}
    assert "parameter_bytes_by_dtype" in data["trl_dpo"]


def test_without_a_gpu_the_gpu_mode_refuses_clearly(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--cpu-tiny" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.json").exists()


def test_flop_formula_against_a_hand_count():
    from clo_recipes.hardware.architecture import Architecture

    shapes = _shapes()
    arch = Architecture.from_config({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2,
                                     "intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
                                     "vocab_size": 10, "tie_word_embeddings": False})
    # per layer: q 8x8 + k 8x4 + v 8x4 + o 8x8 = 192 attention; gate, up, down 8x16 = 384 MLP
    body, trained, head = 2 * (192 + 384), 2 * 192, 10 * 8
    sequence = (5, 2)  # 5 tokens, 2 of them answer
    full = shapes.count_flops(arch, [sequence], adapter_kind="full", lora_rank=1, checkpointing=True)
    assert full.model == (4 * body + 2 * trained) * 5 + 4 * head * 3 + 12 * 2 * 8 * 25 == 32640
    assert full.hardware == 32640 + 2 * body * 5 + 4 * 2 * 8 * 25
    assert full.tokens == 5
    # LoRA r=1 on q, k, v, o: 2 layers x (16 + 12 + 12 + 16) adapter weights
    lora = shapes.count_flops(arch, [sequence, sequence], adapter_kind="qlora", lora_rank=1, checkpointing=False)
    one = (4 * body + 6 * 112) * 5 + 4 * head * 3 + 12 * 2 * 8 * 25
    assert lora.model == lora.hardware == 2 * one and lora.tokens == 10
