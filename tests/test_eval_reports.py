"""Judge and report stages, the summary table, `compare` and `sweep` on real stage outputs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from matplotlib.image import imread
from rich.console import Console
from eval_context import make_context
from test_eval_judge import JudgeHandler

from clo_recipes.engine.context import write_jsonl
from clo_recipes.engine.store import RunStore
from clo_recipes.errors import CloError
from clo_recipes.evaluation.compare import collect, judge_against_baseline, markdown, rich_table, write_comparison
from clo_recipes.evaluation.fidelity import fidelity_metrics
from clo_recipes.evaluation.runs import load_run
from clo_recipes.evaluation.summary import summary_table
from clo_recipes.evaluation.sweep import SweepPoint, axis_keys, choose_metric, sweep_table_rows, write_sweep
from clo_recipes.runner.sweep import expand_grid, parse_grid, point_name, point_overrides, run_sweep
from clo_recipes.stages import judge as judge_stage
from clo_recipes.stages import report as report_stage


PROMPTS = [("p1", "Hola, ¿qué tal?", "Hello, how are you?"), ("p2", "¿Qué es el agua?", "What is water?"),
           ("p3", "Cuenta hasta tres.", "Count to three."), ("p4", "¿Dónde está París?", "Where is Paris?")]


def write_evaluation(store: RunStore, label: str, spanish_answers: int, tag: str = "") -> Path:
    """A finished evaluate folder: answers whose language is known (the first
    `spanish_answers` Spanish prompts answered in Spanish, the rest in English; English prompts
    in English) and the fidelity metrics computed from them."""
    rows = []
    for index, (pid, es, en) in enumerate(PROMPTS):
        in_spanish = index < spanish_answers
        rows.append({"id": pid, "lang": "es", "prompt": es, "answer": f"{tag}{'respuesta' if in_spanish else 'answer'} {label} {pid}",
                     "answer_lang": "es" if in_spanish else "en", "answer_lang_confidence": 0.9})
        rows.append({"id": pid, "lang": "en", "prompt": en, "answer": f"{tag}answer {label} {pid}",
                     "answer_lang": "en", "answer_lang_confidence": 0.9})
    folder, _ = store.begin(f"evaluate-{label}", f"{label}fp000000000")
    write_jsonl(folder / "answers.jsonl", rows)
    metrics = {"stage": "evaluate", "model": label, "weights": f"weights-of-{label}", "language": "es",
               "suites": {"fidelity": fidelity_metrics((r["lang"], r["answer_lang"]) for r in rows)},
               "skipped": [{"suite": "lm_eval", "reason": "lm-evaluation-harness is not installed"}] if label == "base" else []}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return store.finish(f"evaluate-{label}", f"{label}fp000000000", {"stage": f"evaluate-{label}"})


def run_stage(module, recipe: dict, stage_id: str, tmp_path: Path, inputs: dict[str, Path]) -> Path:
    """Run a stage the way the engine does: in a partial folder, finished with a manifest."""
    ctx = make_context(recipe, stage_id, tmp_path, inputs)
    store = RunStore(ctx.run_dir)
    ctx.work_dir, _ = store.begin(stage_id, f"{stage_id}fp1234567890")
    outputs = module.run(ctx)
    return store.finish(stage_id, f"{stage_id}fp1234567890", {"stage": stage_id, "outputs": outputs})


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.api_key, server.seen, server.lock = "k", [], threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def recipe(name: str, judge: dict) -> dict:
    return {"name": name, "method": {"name": "clo", "baselines": ["sft"]},
            "eval": {"suites": ["fidelity", "judge"], "examples": 2, "judge": judge}}


def finished_run(tmp_path: Path, name: str, judge: dict, *, clo_tag: str = "[good] ") -> Path:
    """A run folder with evaluate-base/clo/sft, judge and report stages finished."""
    run_dir = tmp_path / "runs" / name
    store = RunStore(run_dir)
    evaluations = {"evaluate-base": write_evaluation(store, "base", 0),
                   "evaluate-clo": write_evaluation(store, "clo", 4, clo_tag),
                   "evaluate-sft": write_evaluation(store, "sft", 2)}
    judged = run_stage(judge_stage, recipe(name, judge), "judge", tmp_path, evaluations)
    run_stage(report_stage, recipe(name, judge), "report", tmp_path, {**evaluations, "judge": judged})
    return run_dir


def report_of(run_dir: Path) -> tuple[dict, Path]:
    folder = next(run_dir.glob("report-*"))
    return json.loads((folder / "report.json").read_text(encoding="utf-8")), folder


def png_size(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 5_000
    height, width = imread(path).shape[:2]
    return width, height


# ----------------------------------------------------------------------------- judge + report
def test_judge_and_report_with_a_live_judge(tmp_path, judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "k")
    run_dir = finished_run(tmp_path, "es-clo", {"endpoint": judge_server.url, "model": "judge-1",
                                                  "api_key_env": "JUDGE_KEY", "baseline": "sft"})
    judge = json.loads(next(run_dir.glob("judge-*/judge.json")).read_text())
    assert judge["status"] == "ok" and judge["baseline"] == "sft"
    # clo's answers carry [good]: it wins every prompt in both orders; base vs sft answers are
    # plain, so the position-biased judge cancels out to 0.5.
    assert judge["models"]["clo"]["es"]["win_rate"] == 1.0 and judge["models"]["clo"]["es"]["n"] == 4
    assert judge["models"]["base"]["en"]["win_rate"] == 0.5
    assert set(judge["models"]) == {"base", "clo"}
    assert judge["counters"]["requests"] == 2 * 2 * 8  # 2 models x 8 prompts x both orders

    report, folder = report_of(run_dir)
    assert list(report["models"]) == ["base", "clo", "sft"]
    fidelity = report["models"]["sft"]["suites"]["fidelity"]["es"]
    assert (fidelity["k"], fidelity["n"], fidelity["share"]) == (2, 4, 0.5)
    assert report["models"]["base"]["suites"]["fidelity"]["es"]["share"] == 0.0
    assert report["skipped"] == [{"model": "base", "suite": "lm_eval", "reason": "lm-evaluation-harness is not installed"}]
    assert [(e["id"], e["lang"]) for e in report["examples"]] == [("p1", "es"), ("p2", "es")]

    text = (folder / "report.md").read_text(encoding="utf-8")
    assert "| clo | 100.0 [51.0–100.0] | 100.0 [51.0–100.0] | 4 |" in text
    assert "| sft | 50.0 [15.0–85.0] |" in text
    assert "## Judge win rate against `sft`" in text
    assert "| clo | 100.0 [51.0–100.0] | 100.0 [51.0–100.0] | es: 8/0/0 · en: 8/0/0 |" in text
    assert "- **lm_eval** (base): lm-evaluation-harness is not installed" in text
    assert "[good] respuesta clo p1" in text  # example answers side by side
    for name in ("fidelity.png", "win_rate.png"):
        width, height = png_size(folder / name)
        assert width >= 500 and height >= 400
    assert not (folder / "accuracy.png").exists()  # no MC suite measured

    console = Console(record=True, width=220)
    console.print(summary_table(report))
    shown = console.export_text()
    assert "fidelity es" in shown and "win rate es vs sft" in shown
    assert "100.0 [51.0–100.0]" in shown
    assert "skipped lm_eval (base): lm-evaluation-harness is not installed" in shown

    # Judging again (same cache dir) asks the judge nothing and gives the same numbers.
    calls = len(judge_server.seen)
    evaluations = {f"evaluate-{label}": next(run_dir.glob(f"evaluate-{label}-*")) for label in ("base", "clo", "sft")}
    settings = {"endpoint": judge_server.url, "model": "judge-1", "api_key_env": "JUDGE_KEY", "baseline": "sft"}
    again = run_stage(judge_stage, recipe("es-clo", settings), "judge", tmp_path, evaluations)
    rejudged = json.loads((again / "judge.json").read_text())
    assert len(judge_server.seen) == calls
    assert rejudged["counters"]["requests"] == 0 and rejudged["counters"]["cached"] == 32
    assert rejudged["models"] == judge["models"]


def test_missing_key_skips_the_judge_and_the_report_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    run_dir = finished_run(tmp_path, "es-nokey", {"endpoint": "https://judge.example.invalid/v1", "model": "j",
                                                   "api_key_env": "NO_SUCH_JUDGE_KEY"})
    judge = json.loads(next(run_dir.glob("judge-*/judge.json")).read_text())
    assert judge["status"] == "skipped"
    assert judge["reason"] == "API key missing: environment variable NO_SUCH_JUDGE_KEY is not set"
    report, folder = report_of(run_dir)
    assert {"model": None, "suite": "judge", "reason": judge["reason"]} in report["skipped"]
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert "- **judge**: API key missing: environment variable NO_SUCH_JUDGE_KEY is not set" in text
    assert "Judge win rate" not in text and not (folder / "win_rate.png").exists()
    png_size(folder / "fidelity.png")


def test_unreachable_judge_and_unknown_baseline_are_skipped(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = finished_run(tmp_path, "es-down", {"endpoint": f"http://127.0.0.1:{port}/v1", "model": "j"})
    judge = json.loads(next(run_dir.glob("judge-*/judge.json")).read_text())
    assert judge["status"] == "skipped" and "unreachable" in judge["reason"]

    # a baseline the recipe does not train is now refused before anything runs
    from clo_recipes.errors import RecipeError

    with pytest.raises(RecipeError, match="eval.judge.baseline: 'sft\\+dpo' is not trained by this recipe"):
        finished_run(tmp_path / "b", "es-nobase", {"endpoint": f"http://127.0.0.1:{port}/v1", "model": "j",
                                                   "baseline": "sft+dpo"})


# ----------------------------------------------------------------------------- compare
def test_compare_table_plots_and_cross_run_win_rate(tmp_path, judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "k")
    judge = {"endpoint": judge_server.url, "model": "judge-1", "api_key_env": "JUDGE_KEY"}
    first = finished_run(tmp_path / "a", "es-first", judge)
    second = finished_run(tmp_path / "b", "es-second", judge, clo_tag="")
    runs = [load_run(first), load_run(second)]
    comparison = collect(runs)
    # Both runs contribute base/clo/sft for Spanish: rows carry the run name.
    assert comparison.rows() == ["base (es-first)", "clo (es-first)", "sft (es-first)",
                                 "base (es-second)", "clo (es-second)", "sft (es-second)"]
    assert comparison.cell("clo (es-first)", "es", "fidelity")["value"] == 1.0
    assert comparison.cell("sft (es-second)", "es", "fidelity")["value"] == 0.5
    assert comparison.cell("clo (es-first)", "es", "win")["value"] == 1.0
    assert comparison.cell("clo (es-second)", "es", "win")["value"] == 0.5

    judge_against_baseline(comparison, runs, runs[1], endpoint=judge_server.url, model="judge-1",
                           api_key="k", cache_dir=tmp_path / "cache")
    assert comparison.baseline == "es-second:clo"
    assert comparison.cell("clo (es-first)", "es", "xwin")["value"] == 1.0  # [good] answers win
    assert comparison.cell("clo (es-first)", "en", "xwin") is None  # languages are column groups
    assert comparison.cell("clo (es-first)", "es", "xwin_en")["value"] == 1.0

    text = markdown(comparison)
    assert "| model | es · fidelity | es · fidelity en | es · win | es · win en | es · win vs es-second:clo |" in text
    assert "| clo (es-first) | 100.0 [51.0–100.0] | 100.0 [51.0–100.0] | 100.0 [51.0–100.0] |" in text
    written = write_comparison(comparison, tmp_path / "out")
    assert [p.name for p in written] == ["compare.json", "compare.md", "compare_fidelity.png",
                                         "compare_win.png", "compare_xwin.png", "compare.html"]
    for path in written[2:-1]:
        width, height = png_size(path)
        assert width >= 500 and height >= 400
    console = Console(record=True, width=400)
    console.print(rich_table(comparison))
    assert "clo (es-first)" in console.export_text()


def test_compare_rejects_a_run_without_a_trained_model(tmp_path):
    store = RunStore(tmp_path / "runs" / "only-base")
    write_evaluation(store, "base", 0)
    with pytest.raises(CloError, match="not a run with a trained model: it holds no finished train stage"):
        load_run(tmp_path / "runs" / "only-base")
    with pytest.raises(CloError, match="run directory not found"):
        load_run(tmp_path / "nowhere")


def test_compare_command(tmp_path, judge_server, monkeypatch):
    from typer.testing import CliRunner

    from clo_recipes.cli import app

    monkeypatch.setenv("JUDGE_KEY", "k")
    monkeypatch.setenv("CLO_RECIPES_CACHE", str(tmp_path / "cache"))
    judge = {"endpoint": judge_server.url, "model": "judge-1", "api_key_env": "JUDGE_KEY"}
    first = finished_run(tmp_path / "a", "es-first", judge)
    result = CliRunner().invoke(app, ["compare", str(first), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "es · fidelity" in result.output and (tmp_path / "cmp" / "compare_fidelity.png").is_file()
    empty = tmp_path / "empty-run"
    empty.mkdir()
    shown = subprocess.run([sys.executable, "-m", "clo_recipes", "compare", str(empty)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 2
    assert "is not a run with a trained model: it holds no finished train stage" in shown.stderr
    assert "Traceback" not in shown.stderr


# ----------------------------------------------------------------------------- sweep
def test_grid_expansion_and_naming():
    axes = parse_grid(["method=clo,sft+dpo", "data.samples=800,1600"])
    assert axes == [("method.name", ["clo", "sft+dpo"]), ("data.samples", ["800", "1600"])]
    points = expand_grid(axes)
    assert points == [{"method.name": "clo", "data.samples": "800"}, {"method.name": "clo", "data.samples": "1600"},
                      {"method.name": "sft+dpo", "data.samples": "800"}, {"method.name": "sft+dpo", "data.samples": "1600"}]
    assert point_name("thai", points[2]) == "thai-sft-dpo-800"
    assert point_overrides("thai", points[0], ["train.epochs=1"]) == [
        "train.epochs=1", "method.name=clo", "data.samples=800", "name=thai-clo-800"]
    assert axis_keys(axes) == ("data.samples", "method.name")
    with pytest.raises(CloError, match="bad --grid"):
        parse_grid(["data.samples"])
    with pytest.raises(CloError, match="twice"):
        parse_grid(["data.samples=1", "data.samples=2"])


def test_sweep_table_and_data_efficiency_plot(tmp_path):
    """Each grid point is a real run folder (evaluate + report stages); its fidelity grows
    with samples, faster for clo."""
    spanish = {("clo", "800"): 2, ("clo", "1600"): 4, ("sft", "800"): 0, ("sft", "1600"): 1}

    def runner(path, overrides, console=None):
        values = dict(item.split("=", 1) for item in overrides)
        method, samples, name = values["method.name"], values["data.samples"], values["name"]
        root = tmp_path / "points" / name
        run_dir = root / "runs" / name  # where make_context puts the run of recipe `name`
        evaluations = {"evaluate-base": write_evaluation(RunStore(run_dir), "base", 0),
                       f"evaluate-{method}": write_evaluation(RunStore(run_dir), method, spanish[(method, samples)])}
        run_stage(report_stage, {"name": name, "method": {"name": method}, "eval": {"suites": ["fidelity"]}},
                  "report", root, evaluations)
        return type("RunResult", (), {"run_dir": run_dir, "ok": True, "outcomes": []})()

    axes = parse_grid(["method.name=clo,sft", "data.samples=800,1600"])
    points = run_sweep(tmp_path / "recipe.yaml", axes, base_name="es", runner=runner)
    assert [p.name for p in points] == ["es-clo-800", "es-clo-1600", "es-sft-800", "es-sft-1600"]
    assert [p.model for p in points] == ["clo", "clo", "sft", "sft"]
    assert [p.metrics["fidelity"]["value"] for p in points] == [0.5, 1.0, 0.0, 0.25]
    metric = choose_metric(points, None)
    assert metric == "fidelity"
    header, rows = sweep_table_rows(points, metric)
    assert header == ["method.name", "data.samples", "run", "fidelity", "n"]
    assert rows[1] == ["clo", "1600", "es-clo-1600", "100.0 [51.0–100.0]", "4"]
    written = write_sweep(points, axes, metric, tmp_path / "sweep", title="es: fidelity against samples")
    assert [p.name for p in written] == ["sweep.json", "sweep.md", "data_efficiency.png", "sweep.html"]
    width, height = png_size(written[2])
    assert width >= 600 and height >= 400
    document = json.loads(written[0].read_text())
    assert document["x"] == "data.samples" and document["lines"] == "method.name"
    assert "| sft | 1600 | es-sft-1600 | 25.0 [4.6–69.9] | 4 |" in written[1].read_text()


def test_a_failed_sweep_point_is_reported_and_the_rest_still_plotted(tmp_path):
    def runner(path, overrides, console=None):
        raise CloError("translation model not installed", hint="pip install it")

    points = run_sweep(tmp_path / "r.yaml", parse_grid(["data.samples=800"]), base_name="x", runner=runner)
    assert points[0].error.startswith("translation model not installed")
    header, rows = sweep_table_rows(points, "fidelity")
    assert rows[0][-2] == "failed: translation model not installed"
    written = write_sweep(points, parse_grid(["data.samples=800"]), "fidelity", tmp_path / "s", title="t")
    assert [p.name for p in written] == ["sweep.json", "sweep.md", "sweep.html"]  # nothing to plot


def test_sweep_checks_every_grid_point_before_running_any(tmp_path):
    from conftest import REPO

    for grid, message in ((["--grid", "data.sampels=1,2"], "did you mean 'samples'?"),
                          (["--grid", "method=clo,sfd"], "method.name: Input should be 'clo', 'sft' or 'sft+dpo'"),
                          (["--grid", "method=clo", "--metric", "wins"], "unknown sweep metric 'wins'")):
        shown = subprocess.run([sys.executable, "-m", "clo_recipes", "sweep", str(REPO / "recipes" / "demo_cpu.yaml"),
                                *grid, "--out", str(tmp_path / "out")],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert shown.returncode == 2, shown.stderr
        assert message in shown.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()  # nothing ran
