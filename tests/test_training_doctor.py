"""`clo-recipe doctor` and `doctor --smoke` (every stage of a tiny CLO run through the engine)."""

import json

from typer.testing import CliRunner

from clo_recipes.cli import app


def test_doctor_prints_the_environment():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for row in ("torch", "transformers", "CUDA", "bf16", "flash-attention 2", "QLoRA", "hardware: auto"):
        assert row in result.output


def test_smoke_runs_every_stage_and_reports_the_loss(tmp_path):
    folder = tmp_path / "smoke"
    # the smoke run goes through the same door as `run`: --profile and --set mean the same
    result = CliRunner().invoke(app, ["doctor", "--smoke", "--keep", str(folder), "--steps", "4",
                                      "--profile", "cpu", "--set", "eval.max_new_tokens=6"])
    assert result.exit_code == 0, result.output
    assert "smoke run passed" in result.output and "at step 1 ->" in result.output
    run = folder / "runs" / "smoke"
    stages = {path.name.rsplit("-", 1)[0] for path in run.iterdir() if (path / "manifest.json").exists()}
    assert stages == {"source", "translate", "pairs", "reference-clo", "train-clo", "evaluate-base",
                      "evaluate-clo", "report"}
    train = next(run.glob("train-clo-*"))
    rows = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert (train / "model" / "model.safetensors").exists()
    import yaml

    resolved = yaml.safe_load((run / "recipe.resolved.yaml").read_text())
    assert resolved["hardware_profile"] == "cpu" and resolved["provenance"]["hardware.profile"] == "--profile"
    assert resolved["recipe"]["eval"]["max_new_tokens"] == 6 and resolved["provenance"]["eval.max_new_tokens"] == "--set"


def test_smoke_refuses_an_unknown_profile_like_run_does(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--smoke", "--keep", str(tmp_path / "s"), "--profile", "cpuu"])
    assert result.exit_code != 0
    assert "unknown hardware profile 'cpuu'" in result.exception.render() and "did you mean 'cpu'" in result.exception.render()
