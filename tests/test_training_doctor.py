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
    result = CliRunner().invoke(app, ["doctor", "--smoke", "--keep", str(folder), "--steps", "4"])
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
