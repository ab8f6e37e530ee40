"""Export bundles: what goes in (and what stays out), and a re-run from a bundle that skips
source/translate/pairs and reaches the same pairs fingerprint."""

import hashlib
import json
import shutil

import pytest
import yaml
from share_stages import calls, use_share_stages, write_inputs

from clo_recipes.engine.run import execute
from clo_recipes.errors import CloError
from clo_recipes.runner.door import export_run, prepare
from clo_recipes.runner.testing import write_recipe
from clo_recipes.share.bundle import seed_from_bundle


@pytest.fixture
def stages(monkeypatch, tmp_path):
    return use_share_stages(monkeypatch, tmp_path / "calls.log")


@pytest.fixture
def finished(tmp_path, stages):
    """A finished CLO + SFT run of the stand-in stages; returns its plan."""
    folder = tmp_path / "project"
    plan = prepare(write_recipe(write_inputs(folder), folder)).plan
    assert execute(plan).ok
    stages.unlink()
    return plan


def test_export_writes_a_self_contained_bundle(finished, tmp_path):
    result = export_run(finished.run_dir, tmp_path / "bundle")
    bundle = result.path
    index = json.loads((bundle / "bundle.json").read_text())
    assert result.stages == [s.id for s in finished.stages] and result.missing == []
    assert index["stages"]["pairs"]["fingerprint"] == finished.stage("pairs").fingerprint

    pairs = bundle / index["stages"]["pairs"]["dir"]
    assert (pairs / "train.jsonl").read_bytes() == (finished.stage_dir(finished.stage("pairs")) / "train.jsonl").read_bytes()
    assert (pairs / "manifest.json").is_file()
    assert (bundle / index["stages"]["translate"]["dir"] / "translated.jsonl").is_file()
    report = bundle / index["stages"]["report"]["dir"]
    assert {"report.json", "report.md", "fidelity.png"} <= {p.name for p in report.iterdir()}

    # the method's model at the root (loadable from the folder / repo), baselines under arms/
    assert json.loads((bundle / "adapter_config.json").read_text())["arm"] == "clo"
    assert json.loads((bundle / "arms/sft/adapter_config.json").read_text())["arm"] == "sft"
    assert result.model_dir == "."
    train = bundle / index["stages"]["train-clo"]["dir"]
    assert (train / "metrics.jsonl").is_file() and not (train / "model").exists()
    assert not list(bundle.rglob("checkpoint-*"))  # resume state stays home
    assert (bundle / "README.md").read_text().startswith("---\n")  # our card, not PEFT's stub

    # local inputs travel with it and the lock points at them
    lock = yaml.safe_load((bundle / "recipe.lock.yaml").read_text())
    assert lock["recipe"]["data"]["source"] == "./inputs/data.source/data.jsonl"
    assert lock["recipe"]["translation"]["memory_file"] == "./inputs/translation.memory_file/memory.jsonl"
    assert lock["pins"]["samples"]["train"] == 6  # the run's source stage gave the sampled ids

    # every file is indexed with its sha256
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"bundle.json"}
    assert set(index["files"]) == files
    assert index["files"]["adapter_model.safetensors"] == hashlib.sha256(
        (bundle / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_rerun_from_the_bundle_skips_data_stages_and_reaches_the_same_pairs(finished, tmp_path, stages):
    bundle = export_run(finished.run_dir, tmp_path / "bundle").path
    moved = shutil.move(str(bundle), str(tmp_path / "elsewhere" / "bundle"))
    for name in ("data.jsonl", "memory.jsonl"):  # the receiver does not have the author's files
        (finished.resolved.recipe_dir / name).unlink()
    new_runs = tmp_path / "receiver-runs"

    plan = prepare(f"{moved}/recipe.lock.yaml", [f"output_dir={new_runs}"], from_bundle=moved).plan
    assert plan.run_dir == new_runs / "test"
    assert plan.stage("pairs").fingerprint == finished.stage("pairs").fingerprint
    assert [plan.stage(s).status for s in ("source", "translate", "pairs")] == ["done"] * 3
    result = execute(plan)
    assert result.ok
    ran = calls(stages)
    assert ran[0] == "reference-clo" and not {"source", "translate", "pairs"} & set(ran)
    assert {o.id: o.status for o in result.outcomes}["pairs"] == "cached"
    seeded = plan.stage_dir(plan.stage("pairs")) / "train.jsonl"
    assert seeded.read_bytes() == (finished.stage_dir(finished.stage("pairs")) / "train.jsonl").read_bytes()


def test_seeding_only_takes_stages_whose_inputs_match(finished, tmp_path):
    bundle = export_run(finished.run_dir, tmp_path / "bundle").path
    recipe = finished.resolved.source.path
    plan = prepare(recipe, [f"output_dir={tmp_path / 'other'}", "translation.filters.max_length_ratio=4"]).plan
    outcomes = {o.stage: o for o in seed_from_bundle(plan, bundle)}
    assert outcomes["source"].action == "seeded"
    assert outcomes["translate"].action == "inputs differ"
    assert outcomes["translate"].detail.startswith(f"bundle {finished.stage('translate').fingerprint[:12]}, this recipe ")
    assert outcomes["pairs"].action == "inputs differ"
    assert [s.status for s in plan.stages[:3]] == ["done", "pending", "pending"]
    assert seed_from_bundle(plan, bundle)[0].action == "already done"


def test_a_damaged_bundle_is_refused(finished, tmp_path):
    bundle = export_run(finished.run_dir, tmp_path / "bundle").path
    pairs = next(bundle.glob("stages/pairs-*"))
    (pairs / "train.jsonl").write_text('{"id": "forged"}\n')
    plan = prepare(finished.resolved.source.path, [f"output_dir={tmp_path / 'other'}"]).plan
    with pytest.raises(CloError, match=rf"bundle file stages/{pairs.name}/train.jsonl is missing or differs"):
        seed_from_bundle(plan, bundle)
    assert not plan.store.is_done("pairs", plan.stage("pairs").fingerprint)


def test_export_refuses_to_overwrite_unless_forced(finished, tmp_path):
    target = tmp_path / "bundle"
    export_run(finished.run_dir, target)
    with pytest.raises(CloError, match="already holds a bundle"):
        export_run(finished.run_dir, target)
    export_run(finished.run_dir, target, force=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(CloError, match="exists and is not a bundle"):
        export_run(finished.run_dir, tmp_path / "notes", force=True)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_export_of_a_run_whose_inputs_changed_is_refused(finished, tmp_path):
    data = finished.resolved.recipe_dir / "data.jsonl"
    data.write_text(data.read_text().replace("Mars.", "Venus."))
    with pytest.raises(CloError, match="holds no finished stage for its recipe's current inputs"):
        export_run(finished.run_dir, tmp_path / "bundle")


def test_a_bundle_folder_is_itself_a_target(finished, tmp_path):
    """`clo-recipe run BUNDLE/`: its lock, with its data stages seeded (the door reads the
    bundle's index and lock names: runner/target.py keeps them in step with share/bundle.py)."""
    bundle = export_run(finished.run_dir, tmp_path / "bundle").path
    plan = prepare(bundle, [f"output_dir={tmp_path / 'receiver'}"]).plan
    assert [plan.stage(s).status for s in ("source", "translate", "pairs")] == ["done"] * 3
    assert plan.resolved.source.path == bundle / "recipe.lock.yaml"
