"""CLI commands end to end: init, plan (text and --json), run --dry-run, schema --check."""

import json
import subprocess
import sys

from conftest import REPO


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clo_recipes", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_init_writes_a_valid_recipe(tmp_path):
    target = tmp_path / "my.yaml"
    result = cli("init", str(target), "--language", "Korean", "--model", "Qwen/Qwen2.5-3B-Instruct",
                 "--hardware", "single-80gb")
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert "language: ko" in text and "baselines: [sft]" in text
    assert cli("validate", str(target)).returncode == 0
    again = cli("init", str(target))
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_plan_json_lists_stages_and_provenance(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    (tmp_path / "m.jsonl").write_text('{"en": "a", "es": "b"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: p\nlanguage: Spanish\nmodel: {base: org/m}\ndata: {source: d.jsonl}\n"
        "translation: {backend: memory, memory_file: m.jsonl}\nhardware: cpu\n"
        f"output_dir: {tmp_path / 'runs'}\ncache_dir: {tmp_path / 'cache'}\n")
    result = cli("plan", str(recipe), "--json", "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [s["id"] for s in doc["stages"]][:3] == ["source", "translate", "pairs"]
    assert all(s["status"] == "pending" and len(s["fingerprint"]) == 64 for s in doc["stages"])
    assert doc["recipe"]["language"] == "es"
    assert doc["recipe"]["data"]["source"] == str(tmp_path / "d.jsonl")
    assert doc["provenance"]["train.epochs"] == "--set"
    assert doc["provenance"]["data.source"] == "r.yaml:4"
    text = cli("plan", str(recipe))
    assert text.returncode == 0 and "profile:cpu" in text.stdout and "reference-clo" in text.stdout
    dry = cli("run", str(recipe), "--dry-run")
    assert dry.returncode == 0 and "Would run: source, translate, pairs" in dry.stdout
    assert not (tmp_path / "runs").exists()


def test_schema_check_detects_staleness(tmp_path):
    stale, reference = tmp_path / "s.json", tmp_path / "ref.md"
    stale.write_text("{}")
    args = ["--output", str(stale), "--reference", str(reference)]
    result = cli("schema", "--check", *args)
    assert result.returncode == 1 and "out of date" in result.stderr
    assert cli("schema", *args).returncode == 0
    assert cli("schema", "--check", *args).returncode == 0
    assert json.loads(stale.read_text())["properties"]["method"]
    text = reference.read_text()
    assert "## `method`" in text and "| `beta` | float | `0.1` |" in text and "| `name` | str | **required** |" in text


def test_help_lists_commands():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("validate", "plan", "run", "schema", "init"):
        assert command in result.stdout
