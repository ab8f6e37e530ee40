"""Machine detection from `nvidia-smi` output, the profile `auto` picks, and what a machine
cannot honour."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from clo_recipes.hardware.detect import (
    GPU,
    SINGLE_GPU_PROFILES,
    MachineFacts,
    detect,
    machine_adjustments,
    parse_nvidia_smi,
    pick_profile,
    query_gpus,
    visible,
)
from clo_recipes.recipe.resolve import PROFILE_DIR

H100_X8 = "\n".join(f"{i}, GPU-h100-{i}, NVIDIA H100 80GB HBM3, 81559, 9.0" for i in range(8))
A100_X8 = "\n".join(f"{i}, GPU-a100-{i}, NVIDIA A100-SXM4-80GB, 81920, 8.0" for i in range(8))


def _facts(name: str, memory_mib: float, capability: tuple[int, int] | None, count: int = 1, **kw) -> MachineFacts:
    gpus = tuple(GPU(i, name, memory_mib / 1024, capability, f"GPU-{i}") for i in range(count))
    return MachineFacts(gpus=gpus, **kw)


def test_parse_nvidia_smi_rows():
    gpus = parse_nvidia_smi(H100_X8)
    assert len(gpus) == 8
    assert gpus[3] == GPU(3, "NVIDIA H100 80GB HBM3", 81559 / 1024, (9, 0), "GPU-h100-3")
    assert gpus[0].memory_gb == pytest.approx(79.65, abs=0.01)
    assert gpus[0].bf16


def test_old_driver_without_compute_capability_is_retried_without_it():
    calls = []

    def runner(command):
        calls.append(command[-1])
        if "compute_cap" in command[-1]:
            raise subprocess.CalledProcessError(2, command, "Field \"compute_cap\" is not a valid field to query.")
        return "0, GPU-t4, Tesla T4, 15360\n"

    gpus, note = query_gpus(runner)
    assert calls == ["--query-gpu=index,uuid,name,memory.total,compute_cap", "--query-gpu=index,uuid,name,memory.total"]
    assert gpus == [GPU(0, "Tesla T4", 15.0, None, "GPU-t4")] and note is None
    assert not gpus[0].bf16  # unknown capability: no bf16 assumed


def test_broken_driver_is_noted_not_raised():
    def runner(command):
        raise OSError("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")

    gpus, note = query_gpus(runner)
    assert gpus == [] and "couldn't communicate" in note


def test_cuda_visible_devices_filters_and_orders():
    gpus = parse_nvidia_smi(H100_X8)
    assert [g.index for g in visible(gpus, "3,1")] == [3, 1]
    assert [g.index for g in visible(gpus, "GPU-h100-5")] == [5]
    assert visible(gpus, "") == []
    assert [g.index for g in visible(gpus, "0,9,1")] == [0]  # CUDA stops at the first invalid entry
    assert visible(gpus, None) == gpus


def test_detect_on_this_machine_without_importing_torch():
    code = ("import sys, json; from clo_recipes.hardware.detect import detect; f = detect();"
            "print(json.dumps(f.as_dict())); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    facts = detect()
    assert facts.cpu_count >= 1 and facts.ram_gb > 0
    assert facts.bitsandbytes == (__import__("importlib").util.find_spec("bitsandbytes") is not None)
    if not facts.gpus:
        assert '"auto_profile": "cpu"' in done.stdout


@pytest.mark.parametrize("facts, profile", [
    (MachineFacts(), "cpu"),
    (_facts("NVIDIA GeForce RTX 4090", 24564, (8, 9)), "single-24gb"),
    (_facts("NVIDIA A10", 23028, (8, 6)), "single-24gb"),
    (_facts("Tesla T4", 15360, (7, 5)), "single-24gb"),  # smaller than every profile
    (_facts("NVIDIA A100-SXM4-40GB", 40960, (8, 0)), "single-24gb"),  # 40 < 44: the 48 GB profile would lie
    (_facts("NVIDIA L40S", 46068, (8, 9)), "single-48gb"),
    (_facts("NVIDIA RTX A6000", 49140, (8, 6)), "single-48gb"),
    (_facts("NVIDIA A100-SXM4-80GB", 81920, (8, 0)), "single-80gb"),
    (_facts("NVIDIA H200", 143771, (9, 0)), "single-80gb"),
    (_facts("NVIDIA A100-SXM4-80GB", 81920, (8, 0), count=4), "single-80gb"),  # fewer than 8: one GPU
    (MachineFacts(gpus=tuple(parse_nvidia_smi(A100_X8))), "8xa100"),
    (MachineFacts(gpus=tuple(parse_nvidia_smi(H100_X8))), "8xh100"),
    (_facts("NVIDIA L4", 23034, (8, 9), count=8), "single-24gb"),  # eight small GPUs: no 8x profile
])
def test_pick_profile(facts, profile):
    assert pick_profile(facts) == profile


def test_profile_memory_thresholds_are_the_profile_files_values():
    for name, memory in SINGLE_GPU_PROFILES:
        assert yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())["gpu_memory_gb"] == memory
    for name in ("8xa100", "8xh100"):
        assert yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())["gpu_memory_gb"] == 79.0


def _profile(name: str) -> dict:
    values = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    values.pop("description")
    return values


def test_machine_adjustments_for_a_small_old_gpu_without_kernels():
    t4 = _facts("Tesla T4", 15360, (7, 5), flash_attn=False, bitsandbytes=False)
    changes = machine_adjustments(_profile("single-24gb"), t4)
    assert changes == {
        "gpu_memory_gb": (15.0, "the GPU has 15.0 GiB"),
        "precision": ("fp16", "this GPU has no bf16 (compute capability < 8.0)"),
        "attention": ("sdpa", "flash-attn is not installed"),
        "optimizer": ("adamw_torch", "bitsandbytes is not installed"),
    }


def test_machine_adjustments_none_when_the_machine_matches():
    h100s = MachineFacts(gpus=tuple(parse_nvidia_smi(H100_X8)), flash_attn=True, bitsandbytes=True)
    assert machine_adjustments(_profile("8xh100"), h100s) == {}
    assert machine_adjustments(_profile("cpu"), h100s) == {}
    two = _facts("NVIDIA A100-SXM4-80GB", 81920, (8, 0), count=2, flash_attn=True, bitsandbytes=True)
    assert machine_adjustments(_profile("8xa100"), two) == {"num_gpus": (2, "2 GPU(s) visible")}
