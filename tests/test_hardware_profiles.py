"""Hardware profiles as data: each resolves into the recipe as documented, the recipe wins
over the profile, `plan` can tell where each value came from; and the batch split."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clo_recipes.runner.testing import write_recipe
from clo_recipes.errors import CloError
from clo_recipes.hardware.batch import check_batch, derive_batch
from clo_recipes.recipe.load import load_recipe
from clo_recipes.recipe.resolve import PROFILE_DIR, available_profiles, resolve
from clo_recipes.recipe.schema.hardware import HardwareSection

REPO = Path(__file__).resolve().parent.parent
PROFILES = ["cpu", "single-24gb", "single-48gb", "single-80gb", "8xa100", "8xh100"]
FIELDS = set(HardwareSection.model_fields) - {"profile", "accelerate_config"}


def _profile(name: str) -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _resolve(tmp_path: Path, recipe: dict):
    return resolve(load_recipe(write_recipe(recipe, tmp_path)))


def test_the_documented_profiles_exist_and_set_every_field():
    assert available_profiles() == sorted(PROFILES)
    for name in PROFILES:
        values = _profile(name)
        assert isinstance(values.pop("description"), str)
        expected = FIELDS - {"gpu_memory_gb"} if name == "cpu" else FIELDS  # no GPU, no GPU memory
        assert set(values) == expected, name
        HardwareSection(profile=name, **values)  # every value is valid for the schema


@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_fills_the_recipe_and_says_so(tmp_path, name):
    resolved = _resolve(tmp_path, {"hardware": name, "train": {"global_batch_size": 32}})
    hardware = resolved.recipe.hardware
    assert hardware.profile == name
    for key, value in _profile(name).items():
        if key == "description":
            continue
        assert getattr(hardware, key) == value, key
        assert resolved.provenance[f"hardware.{key}"] == f"profile:{name}"
    check_batch(resolved.recipe)  # 32 splits on every profile


def test_what_the_profiles_promise():
    cpu, small, medium, large, a100s, h100s = (_profile(n) for n in PROFILES)
    assert cpu["num_gpus"] == 0 and cpu["precision"] == "fp32"
    for single in (small, medium, large):
        assert single["num_gpus"] == 1 and single["sharding"] == "none" and single["precision"] == "bf16"
        assert single["gradient_checkpointing"] and single["attention"] == "flash_attention_2"
    assert small["optimizer"] == medium["optimizer"] == "paged_adamw_8bit"  # 8-bit AdamW where it helps
    assert small["gpu_memory_gb"] < medium["gpu_memory_gb"] < large["gpu_memory_gb"]
    for eight in (a100s, h100s):
        assert eight["num_gpus"] == 8 and eight["sharding"] == "fsdp" and eight["gpu_memory_gb"] == 79.0


def test_recipe_values_override_the_profile(tmp_path):
    resolved = _resolve(tmp_path, {"hardware": {"profile": "single-24gb", "micro_batch_size": 2,
                                                "optimizer": "adamw_torch"}})
    hardware = resolved.recipe.hardware
    assert hardware.micro_batch_size == 2 and hardware.optimizer == "adamw_torch"
    assert resolved.provenance["hardware.micro_batch_size"].startswith("recipe.yaml:")
    assert resolved.provenance["hardware.precision"] == "profile:single-24gb"


def test_set_overrides_the_profile_and_the_profile_flag_replaces_it(tmp_path):
    path = write_recipe({"hardware": "single-80gb"}, tmp_path)
    resolved = resolve(load_recipe(path, ["hardware.micro_batch_size=1"]), profile_override="8xh100")
    assert resolved.recipe.hardware.num_gpus == 8
    assert resolved.recipe.hardware.micro_batch_size == 1
    assert resolved.provenance["hardware.micro_batch_size"] == "--set"


def test_qlora_implies_nf4_on_any_gpu_profile(tmp_path):
    resolved = _resolve(tmp_path, {"hardware": "single-24gb", "adapter": {"kind": "qlora"}})
    assert resolved.recipe.hardware.quantization == "nf4"
    assert resolved.provenance["hardware.quantization"] == "derived: adapter.kind=qlora"


def test_auto_uses_the_profile_detection_picks(tmp_path, monkeypatch):
    import clo_recipes.hardware.detect as detect

    monkeypatch.setattr(detect, "pick_profile", lambda facts=None: "8xh100")
    resolved = _resolve(tmp_path, {"hardware": "auto"})
    assert resolved.profile == "8xh100"
    assert resolved.recipe.hardware.num_gpus == 8
    assert resolved.provenance["hardware.sharding"] == "profile:8xh100 (auto)"


def test_auto_lowers_what_the_detected_gpu_cannot_do_but_keeps_what_the_recipe_wrote(tmp_path, monkeypatch):
    import clo_recipes.hardware.detect as detect

    t4 = detect.MachineFacts(gpus=(detect.GPU(0, "Tesla T4", 15.0, (7, 5)),), bitsandbytes=True)
    monkeypatch.setattr(detect, "detect", lambda runner=None: t4)
    resolved = _resolve(tmp_path, {"hardware": "auto"})
    assert resolved.profile == "single-24gb"
    hardware = resolved.recipe.hardware
    assert (hardware.precision, hardware.attention, hardware.gpu_memory_gb) == ("fp16", "sdpa", 15.0)
    assert resolved.provenance["hardware.precision"] == "auto: this GPU has no bf16 (compute capability < 8.0)"
    assert resolved.provenance["hardware.attention"] == "auto: flash-attn is not installed"
    assert resolved.provenance["hardware.num_gpus"] == "profile:single-24gb (auto)"

    resolved = _resolve(tmp_path, {"hardware": {"profile": "auto", "precision": "bf16"}})
    assert resolved.recipe.hardware.precision == "bf16"  # written by the user: theirs to keep
    assert resolved.recipe.hardware.attention == "sdpa"
    # A named profile describes the machine the run is meant for: nothing is lowered.
    assert _resolve(tmp_path, {"hardware": "single-24gb"}).recipe.hardware.precision == "bf16"


def test_unknown_profile_suggests_the_closest(tmp_path):
    with pytest.raises(CloError, match="did you mean 'single-24gb'"):
        _resolve(tmp_path, {"hardware": "single-24g"})


@pytest.mark.parametrize("recipe", ["thai_llama.yaml", "korean_llama.yaml", "chinese_mistral.yaml",
                                    "swahili_qwen.yaml", "demo_cpu.yaml"])
def test_shipped_recipes_split_their_batch(recipe):
    check_batch(resolve(load_recipe(REPO / "recipes" / recipe)).recipe)


# --------------------------------------------------------------------------- batch split
@pytest.mark.parametrize("global_batch, micro, world, expected", [
    (32, 1, 1, (1, 32)),  # single-24gb
    (32, 2, 8, (2, 2)),  # 8xa100
    (32, 4, 8, (4, 1)),  # 8xh100
    (32, 2, 16, (2, 1)),  # 2 machines x 8
    (8, 4, 1, (4, 2)),  # the CPU demo
])
def test_derive_batch(global_batch, micro, world, expected):
    micro_out, accumulation = derive_batch(global_batch, micro, world)
    assert (micro_out, accumulation) == expected
    assert micro_out * accumulation * world == global_batch


def test_indivisible_batch_is_an_error_with_values_that_work():
    with pytest.raises(CloError) as caught:
        derive_batch(20, 4, 8)
    error = caught.value.problems[0]
    assert error.message == "train.global_batch_size=20 is not a multiple of micro_batch_size × GPUs = 4 × 8 = 32"
    assert error.hint == "set train.global_batch_size: 32"
    with pytest.raises(CloError) as caught:
        derive_batch(20, 4, 2)  # 10 per GPU: micro 2 works, or a global batch of 16 / 24
    assert caught.value.problems[0].hint == (
        "set train.global_batch_size: 16 or train.global_batch_size: 24 or hardware.micro_batch_size: 2")


def test_check_batch_reads_the_resolved_recipe(tmp_path):
    # the resolver runs check_batch, so a bad split fails at plan time, located at the field
    with pytest.raises(CloError, match="train.global_batch_size: .*2 × 8 = 16"):
        _resolve(tmp_path, {"hardware": "8xh100", "train": {"global_batch_size": 12}})
    resolved = _resolve(tmp_path / "ok", {"hardware": "8xh100", "train": {"global_batch_size": 32}})
    check_batch(resolved.recipe)  # 32 = 2 x 8 x 2 accumulation steps
