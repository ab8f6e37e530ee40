"""The generation-backend registry (`recipe/generation_backends.py`) and what `plan` says about
the backends through the CLI: the judge's backend, its needs, and a LoRA rank above the
managed server's limit (one screen, naming the setting, exit 2)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import typing

import pytest
import yaml

from conftest import REPO
from clo_recipes.recipe import generation_backends as registry
from clo_recipes.recipe.schema.evaluation import EvalSection, JudgeSection


def test_the_schema_takes_its_names_and_text_from_the_registry():
    literal = typing.get_args(EvalSection.model_fields["generation_backend"].annotation)
    assert literal == ("auto", "transformers", "vllm", "endpoint") == (registry.AUTO, *registry.NAMES)
    assert typing.get_args(JudgeSection.model_fields["backend"].annotation) == registry.JUDGE_NAMES == ("vllm", "endpoint")
    described = EvalSection.model_fields["generation_backend"].description
    for entry in registry.BACKENDS.values():
        assert f"`{entry.name}`: {entry.description}" in described
    judged = JudgeSection.model_fields["backend"].description
    assert "`vllm`: a vLLM server the judge stage starts" in judged and "transformers" not in judged


def test_every_function_the_registry_names_exists():
    from clo_recipes.recipe.backends import load_function

    for entry in registry.BACKENDS.values():
        for target in (entry.open, entry.check, entry.judge):
            if target:
                assert callable(load_function(target)), target
        assert entry.streams == (entry.name != "transformers")  # only in-process generate batches


def test_nothing_outside_the_registry_compares_a_backend_name():
    """`== "vllm"`, `in ("endpoint", ...)`: the name is dispatched in the registry only."""
    names = set(registry.NAMES) | {registry.AUTO}
    found = []
    for path in sorted((REPO / "clo_recipes").rglob("*.py")):
        if path.name == "generation_backends.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                constants = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in names]
                named = [n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(node)
                         if isinstance(n, (ast.Attribute, ast.Name))]
                if constants and any("backend" in name for name in named):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clo_recipes", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def recipe(tmp_path, *, rank: int = 16, args: list | None = None, judge: dict | None = None) -> str:
    python = tmp_path / "vllm-venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.touch()  # plan checks the server Python exists, and never runs it
    evaluation = {"suites": ["fidelity"] + (["judge"] if judge else []), "generation_backend": "vllm",
                  "vllm": {"python": str(python), **({"args": args} if args is not None else {})}}
    if judge:
        evaluation["judge"] = {"baseline": "base", **judge}  # the default `sft` is not an arm here
    document = {"name": "p", "language": "es", "model": {"base": "org/m"}, "data": {"source": "d.jsonl"},
                "translation": {"backend": "memory", "memory_file": "m.jsonl"}, "hardware": "cpu",
                "adapter": {"kind": "lora", "r": rank}, "eval": evaluation,
                "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")}
    (tmp_path / "m.jsonl").write_text('{"en": "Hello", "es": "Hola"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def one_screen(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 20
    return result.stderr


@pytest.mark.parametrize("written", [["--max-lora-rank", "8"], ["--enforce-eager", "--max-lora-rank=8"]])
def test_a_lora_rank_above_the_servers_limit_stops_plan(tmp_path, written):
    text = one_screen(cli("plan", recipe(tmp_path, rank=16, args=written)))
    assert "r.yaml:" in text and "eval.vllm.args" in text
    assert "the LoRA adapter's rank (adapter.r = 16) is above --max-lora-rank 8 in eval.vllm.args" in text
    assert "raise it to --max-lora-rank 16 in eval.vllm.args" in text and "lower adapter.r to 8" in text


def test_a_rank_vllm_does_not_accept_is_refused_and_a_fitting_one_plans(tmp_path):
    text = one_screen(cli("plan", recipe(tmp_path, rank=16, args=["--max-lora-rank", "12"])))
    assert "--max-lora-rank 12 in eval.vllm.args is not a rank vLLM accepts" in text and "320, 512" in text
    planned = cli("plan", recipe(tmp_path, rank=16, args=["--max-lora-rank=64"]), "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["notes"] == []


def test_an_adapter_above_vllms_largest_rank_plans_with_a_note(tmp_path):
    planned = cli("plan", recipe(tmp_path, rank=1024, args=["--max-lora-rank", "8"]), "--json")
    assert planned.returncode == 0, planned.stderr
    (note,) = json.loads(planned.stdout)["notes"]
    assert note.startswith("eval.vllm.args: adapter.r 1024 is above vLLM's largest --max-lora-rank (512)")
    assert "merges each LoRA arm into its folder first" in note and "generation.merged" in note


def test_the_judge_names_the_backends_it_accepts_and_what_vllm_needs(tmp_path):
    text = one_screen(cli("validate", recipe(tmp_path, judge={"backend": "transformers", "model": "m"})), code=1)
    assert "eval.judge.backend" in text
    assert "`transformers` cannot judge: the judge needs a chat server, one of: vllm, endpoint" in text

    text = one_screen(cli("plan", recipe(tmp_path, judge={"backend": "vllm"})))
    assert "eval.judge.backend is `vllm` but eval.judge.model is unset" in text
    assert "hub id or local folder" in text

    (tmp_path / "judge.gguf").write_bytes(b"GGUF")
    text = one_screen(cli("plan", recipe(tmp_path, judge={"backend": "vllm", "model": "./judge.gguf"})))
    assert "eval.judge.model" in text and f"vLLM cannot serve the judge model '{tmp_path / 'judge.gguf'}'" in text
    assert "or use eval.judge.backend: endpoint" in text


def test_a_judge_server_needs_a_server_python(tmp_path):
    from importlib.util import find_spec

    if find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: this Python is the server's")
    env = {key: value for key, value in __import__("os").environ.items() if key != "CLO_VLLM_PYTHON"}
    path = recipe(tmp_path, judge={"backend": "vllm", "model": "org/judge"})
    document = yaml.safe_load(open(path))
    document["eval"]["generation_backend"] = "transformers"
    document["eval"]["vllm"].pop("python")
    open(path, "w").write(yaml.safe_dump(document))
    text = one_screen(cli("plan", path, env=env))
    assert "eval.judge.backend is `vllm` but vLLM is not importable here" in text
    assert "set eval.vllm.python" in text and "or set eval.judge.backend: endpoint" in text
