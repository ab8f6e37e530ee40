"""The staged engine: fingerprints change exactly when inputs change; interrupted runs resume
without redoing finished stages; the run dir is locked; resolved recipes hold no secrets."""

import dataclasses
import json
import os

import pytest

from clo_recipes.engine import stages as stage_table
from clo_recipes.engine.plan import make_plan
from clo_recipes.engine.run import execute
from clo_recipes.runner.testing import write_recipe
from clo_recipes.errors import CloError
from clo_recipes.recipe.load import load_recipe
from clo_recipes.recipe.resolve import resolve


def plan_for(tmp_path, recipe=None, overrides=()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "data.jsonl").write_text('{"prompt": "Hi", "response": "Hello"}\n')
    (tmp_path / "memory.jsonl").write_text('{"en": "Hi", "es": "Hola"}\n')
    path = write_recipe(recipe or {}, tmp_path)
    return make_plan(resolve(load_recipe(path, list(overrides))))


def fingerprints(plan):
    return {stage.id: stage.fingerprint for stage in plan.stages}


def changed(before, after):
    return {sid for sid in before if before[sid] != after.get(sid)}


def test_stage_graph_follows_the_method(tmp_path):
    clo = plan_for(tmp_path, {"method": {"baselines": ["sft"]}})
    assert [s.id for s in clo.stages] == [
        "source", "translate", "pairs", "reference-clo", "train-clo", "train-sft",
        "evaluate-base", "evaluate-clo", "evaluate-sft", "report"]
    sft = plan_for(tmp_path / "sft", {"method": {"name": "sft"}, "eval": {"suites": ["fidelity", "judge"]}})
    assert [s.id for s in sft.stages] == [
        "source", "translate", "pairs", "train-sft", "evaluate-base", "evaluate-sft", "judge", "report"]
    assert sft.stage("train-sft").view.method.name == "sft"


def test_learning_rate_reruns_training_and_evaluation_only(tmp_path):
    before = fingerprints(plan_for(tmp_path))
    assert fingerprints(plan_for(tmp_path)) == before  # deterministic
    after = fingerprints(plan_for(tmp_path, overrides=["train.learning_rate=2e-5"]))
    assert changed(before, after) == {"train-clo", "evaluate-clo", "report"}


def test_translation_change_reruns_from_translate(tmp_path):
    before = fingerprints(plan_for(tmp_path))
    after = fingerprints(plan_for(tmp_path, overrides=["translation.filters.max_length_ratio=4"]))
    assert changed(before, after) == set(before) - {"source"}


def test_data_file_content_is_hashed(tmp_path):
    before = fingerprints(plan_for(tmp_path))
    (tmp_path / "data.jsonl").write_text('{"prompt": "Hi", "response": "Hello there"}\n')
    path = tmp_path / "recipe.yaml"
    after = fingerprints(make_plan(resolve(load_recipe(path))))
    assert changed(before, after) == set(before)
    # the memory file is read by translate, not by source
    (tmp_path / "memory.jsonl").write_text('{"en": "Hi", "es": "¡Hola!"}\n')
    again = fingerprints(make_plan(resolve(load_recipe(path))))
    assert changed(after, again) == set(before) - {"source"}


def test_beta_changes_reference_free_stages_only(tmp_path):
    before = fingerprints(plan_for(tmp_path))
    after = fingerprints(plan_for(tmp_path, overrides=["method.beta=0.2"]))
    # the reference stage declares it reads `method`, so it is conservative here
    assert "source" not in changed(before, after) and "pairs" not in changed(before, after)
    assert {"train-clo", "evaluate-clo", "report"} <= changed(before, after)
    assert "evaluate-base" not in changed(before, after)


@pytest.fixture
def counting_stages(monkeypatch, tmp_path):
    """Point every stage kind at tests/support/counting_stage.py."""
    for kind, spec in list(stage_table.SPECS.items()):
        monkeypatch.setitem(stage_table.SPECS, kind, dataclasses.replace(
            spec, module="counting_stage", checks=()))  # the table's properties stay
    log = tmp_path / "calls.log"
    monkeypatch.setenv("COUNTING_STAGE_LOG", str(log))
    return log


def calls(log):
    return log.read_text().split() if log.exists() else []


def test_interrupted_run_resumes_without_redoing_finished_stages(tmp_path, counting_stages, monkeypatch):
    recipe = {"method": {"name": "sft"}}
    monkeypatch.setenv("COUNTING_STAGE_FAIL", "train-sft")
    with pytest.raises(KeyboardInterrupt):
        execute(plan_for(tmp_path, recipe))
    assert calls(counting_stages) == ["source", "translate", "pairs", "train-sft"]
    plan = plan_for(tmp_path, recipe)
    status = {s.id: s.status for s in plan.stages}
    assert status["pairs"] == "done" and status["train-sft"] == "partial" and status["report"] == "pending"
    # no finished-looking folder for the interrupted stage
    assert not plan.store.is_done("train-sft", plan.stage("train-sft").fingerprint)

    monkeypatch.delenv("COUNTING_STAGE_FAIL")
    counting_stages.unlink()
    result = execute(plan)
    assert calls(counting_stages) == ["train-sft", "evaluate-base", "evaluate-sft", "report"]
    outcome = {o.id: o for o in result.outcomes}
    assert outcome["source"].status == "cached"
    assert outcome["train-sft"].outputs["resumed_from"] == "train-sft half done"  # found its checkpoint
    manifest = json.loads((plan.stage_dir(plan.stage("train-sft")) / "manifest.json").read_text())
    assert manifest["resumed"] is True and manifest["inputs"] == {"pairs": plan.stage("pairs").fingerprint}
    report = json.loads((plan.stage_dir(plan.stage("report")) / "out.json").read_text())
    assert set(report["upstream"]) == {"translate", "evaluate-base", "evaluate-sft"}

    counting_stages.unlink()
    execute(plan_for(tmp_path, recipe))
    assert calls(counting_stages) == []  # everything cached


def test_only_and_from(tmp_path, counting_stages):
    recipe = {"method": {"name": "sft"}}
    with pytest.raises(CloError, match="needs source to be finished first"):
        execute(plan_for(tmp_path, recipe), only=["translate"])
    execute(plan_for(tmp_path, recipe), only=["source"])
    assert calls(counting_stages) == ["source"]
    execute(plan_for(tmp_path, recipe))
    counting_stages.unlink()
    execute(plan_for(tmp_path, recipe), from_stage="evaluate")
    assert calls(counting_stages) == ["evaluate-base", "evaluate-sft", "report"]
    with pytest.raises(CloError, match="no stage named 'evaluation'"):
        execute(plan_for(tmp_path, recipe), from_stage="evaluation")


def test_run_dir_is_claimed_by_one_run(tmp_path, counting_stages):
    plan = plan_for(tmp_path, {"method": {"name": "sft"}})
    plan.store.claim()
    try:
        with pytest.raises(CloError, match="is in use by pid"):
            execute(plan_for(tmp_path, {"method": {"name": "sft"}}))
    finally:
        plan.store.release()


def test_resolved_recipe_has_provenance_and_no_secrets(tmp_path, counting_stages, monkeypatch):
    secret = "hf_SuperSecretToken123"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("COUNTING_STAGE_ECHO", secret)
    plan = plan_for(tmp_path, {"method": {"name": "sft"}, "eval": {"judge": {"model": secret}}},
                    overrides=["train.epochs=3"])
    execute(plan)
    text = (plan.run_dir / "recipe.resolved.yaml").read_text()
    assert secret not in text and "***" in text
    for path in plan.run_dir.rglob("*.json"):
        assert secret not in path.read_text()
    # a stage output that echoes a secret is masked before the stage is marked finished
    echoed = json.loads((plan.stage_dir(plan.stage("report")) / "out.json").read_text())
    assert echoed["echo"] == "***"
    assert json.loads((plan.stage_dir(plan.stage("report")) / "manifest.json").read_text())[
        "secrets_masked_in"] == ["out.json"]
    from clo_recipes.secrets import redact_files

    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "report.json").write_text(json.dumps({"judge_model": secret}))
    (leaky / "weights.bin").write_bytes(secret.encode())
    assert redact_files(leaky) == ["report.json"]
    assert secret not in (leaky / "report.json").read_text()
    import yaml

    doc = yaml.safe_load(text)
    assert doc["provenance"]["train.epochs"] == "--set"
    assert doc["provenance"]["hardware.precision"] == "profile:cpu"
    assert doc["provenance"]["language"] == "recipe.yaml:2"
    assert doc["provenance"]["method.beta"] == "default"
    assert doc["versions"]["clo-recipes"]


def test_schema_and_reference_are_in_sync():
    from conftest import REPO

    from clo_recipes.recipe.json_schema import recipe_json_schema_text, recipe_reference_markdown

    committed = (REPO / "schemas" / "recipe.schema.json").read_text(encoding="utf-8")
    assert committed == recipe_json_schema_text(), "run `clo-recipe schema` and commit the result"
    reference = (REPO / "docs" / "recipe-reference.md").read_text(encoding="utf-8")
    assert reference == recipe_reference_markdown(), "run `clo-recipe schema` and commit the result"
