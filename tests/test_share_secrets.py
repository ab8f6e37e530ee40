"""Secrets never enter a lock, a bundle, a card or a log: a run made with HF_TOKEN and an
API key set (and pasted into recipe fields) is locked and exported through the CLI, and
every file and every line printed is searched for their values."""

from pathlib import Path

import pytest
from share_stages import use_share_stages, write_inputs
from typer.testing import CliRunner

from clo_recipes.cli import app
from clo_recipes.engine.run import execute
from clo_recipes.runner.door import prepare
from clo_recipes.runner.testing import write_recipe

HF_TOKEN = "hf_SecretTokenValue123"
API_KEY = "sk-SecretApiKey456789"


@pytest.fixture
def secret_run(tmp_path, monkeypatch):
    use_share_stages(monkeypatch, tmp_path / "calls.log")
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    recipe = write_inputs(tmp_path / "project")
    # a careless author pastes both into fields (one via --set): they must still not leak
    recipe["eval"] = {"suites": ["fidelity", "judge"], "judge": {"endpoint": f"http://127.0.0.1:9/v1?key={API_KEY}"}}
    path = write_recipe(recipe, tmp_path / "project")
    plan = prepare(path, [f"eval.judge.model={HF_TOKEN}"]).plan
    assert execute(plan).ok
    return path, plan


def leaks(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, secret in (("HF_TOKEN", HF_TOKEN), ("API key", API_KEY))
                      if secret.encode() in data]
    return found


def test_no_secret_in_run_lock_bundle_card_or_output(secret_run, tmp_path):
    recipe_path, plan = secret_run
    runner = CliRunner()
    locked = runner.invoke(app, ["lock", str(recipe_path), "--set", f"eval.judge.model={HF_TOKEN}", "--run-source"])
    assert locked.exit_code == 0, locked.output
    exported = runner.invoke(app, ["export", str(plan.run_dir), str(tmp_path / "bundle")])
    assert exported.exit_code == 0, exported.output
    checked = runner.invoke(app, ["lock", str(recipe_path.with_name("recipe.lock.yaml")), "--check",
                                  "--set", f"eval.judge.model={HF_TOKEN}"])
    assert checked.exit_code == 0, checked.output

    lock_text = recipe_path.with_name("recipe.lock.yaml").read_text()
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "model: '***'" in lock_text and "key=***" in lock_text  # the fields were there, masked
    assert "--set 'eval.judge.model=***'" in card  # the exact command, masked
    assert leaks(tmp_path / "bundle") == []
    assert all(secret not in lock_text for secret in (HF_TOKEN, API_KEY))
    # what the engine writes into the run directory (stage files are each stage's own business;
    # the export masks them, see below)
    engine_files = [plan.run_dir / "recipe.resolved.yaml", *plan.run_dir.glob("*/manifest.json")]
    assert len(engine_files) == len(plan.stages) + 1
    assert [f for f in engine_files if HF_TOKEN in f.read_text() or API_KEY in f.read_text()] == []
    for result in (locked, exported, checked):
        assert HF_TOKEN not in result.output and API_KEY not in result.output


def test_export_masks_a_secret_a_stage_wrote_into_its_files(tmp_path, monkeypatch):
    use_share_stages(monkeypatch, tmp_path / "calls.log")
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("SHARE_STAGE_LEAK", "1")  # the stand-in train stage logs the token
    folder = tmp_path / "project"
    plan = prepare(write_recipe(write_inputs(folder), folder)).plan
    assert execute(plan).ok
    leaked = plan.stage_dir(plan.stage("train-clo")) / "train.log"
    assert leaked.read_text() == "logged in with ***\n"  # the engine masked it when the stage finished
    leaked.write_text(f"logged in with {HF_TOKEN}\n")  # written after the stage finished: export must mask it

    result = CliRunner().invoke(app, ["export", str(plan.run_dir), str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert leaks(tmp_path / "bundle") == []
    shared = next((tmp_path / "bundle" / "stages").glob("train-clo-*")) / "train.log"
    assert shared.read_text() == "logged in with ***\n"
    assert "secret values masked in:" in result.output and "train.log" in result.output
