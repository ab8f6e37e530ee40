"""Resolved hardware is complete and read one way: every shipped recipe planned under every
profile (and as QLoRA) gives training, the reference stage, the accelerate launch config and
the memory estimate the same precision and quantization, with no fallback anywhere."""

from pathlib import Path

import pytest

from clo_recipes.engine.plan import make_plan
from clo_recipes.errors import RecipeError
from clo_recipes.hardware import memory
from clo_recipes.hardware.launch import accelerate_config
from clo_recipes.hardware.precision import MIXED_PRECISION
from clo_recipes.recipe.load import load_recipe
from clo_recipes.recipe.resolve import available_profiles, resolve
from clo_recipes.recipe.schema.hardware import RESOLVED_FIELDS

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_every_profile_sets_every_field_a_stage_reads():
    from clo_recipes.recipe.resolve import load_profile

    for profile in available_profiles():
        values = load_profile(profile)
        assert [key for key in RESOLVED_FIELDS if values.get(key) is None] == [], profile


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_training_reference_launch_and_estimate_see_the_same_numerics(recipe, tmp_path, monkeypatch):
    seen: list[dict] = []
    real = memory.estimate_memory
    monkeypatch.setattr(memory, "estimate_memory", lambda config, **kw: seen.append(kw) or real(config, **kw))
    checked = 0
    for profile in available_profiles():
        for adapter in (None, "qlora"):
            overrides = [f"output_dir={tmp_path}"] + ([f"adapter.kind={adapter}"] if adapter else [])
            try:
                resolved = resolve(load_recipe(recipe, overrides), profile_override=profile)
            except RecipeError as error:  # a batch split this profile cannot run: said at plan time
                assert "global_batch_size" in str(error)
                continue
            hardware = resolved.recipe.hardware
            assert all(getattr(hardware, key) is not None for key in RESOLVED_FIELDS), (recipe.name, profile)
            if adapter == "qlora":
                assert hardware.quantization == "nf4"
            plan = make_plan(resolved)
            for stage in plan.stages:
                if stage.kind in ("reference", "train", "evaluate"):
                    assert stage.view.hardware.precision == hardware.precision, (stage.id, profile)
                    assert stage.view.hardware.quantization == hardware.quantization, (stage.id, profile)
            config = accelerate_config(hardware, num_processes=max(hardware.num_gpus, 1))
            assert config["mixed_precision"] == MIXED_PRECISION[hardware.precision]
            seen.clear()
            memory.check_fit(resolved.recipe)
            if hardware.num_gpus:  # the estimate is per GPU
                assert seen and seen[-1]["precision"] == hardware.precision
                assert seen[-1]["quantization"] == hardware.quantization
            checked += 1
    assert checked >= len(available_profiles())
