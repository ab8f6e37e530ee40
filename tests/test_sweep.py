"""`clo-recipe sweep` through the real engine on the tiny model: a cut-down data-efficiency
grid (4 and 8 samples x clo/sft x two training seeds), stage reuse across points (same
fingerprint, and slices of the largest point) checked equal to independent runs, skipping
finished points, resuming an interrupted one, and the seed-aggregated tables and plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clo_recipes.engine.context import read_jsonl
from clo_recipes.evaluation.sweep import SweepPoint, aggregate_seeds, axis_keys, paper_reading, write_sweep
from clo_recipes.runner.sweep import load_sweep_file, parse_grid, run_sweep
from clo_recipes.runner.testing import write_recipe

EN = ["the cat on the mat", "the dog in the park", "water at one hundred degrees", "an egg in boiling water",
      "good morning to you"]
ES = ["el gato en la alfombra", "el perro en el parque", "el agua a cien grados", "un huevo en agua hirviendo",
      "buenos días a ti"]
GRID = ["data.samples=4,8", "method.name=clo,sft", "train.seed=1,2"]


def _write_data(folder: Path) -> None:
    data, memory = [], []
    for i in range(20):
        prompt, answer = f"Tell me about {EN[i % 5]}, number {i}.", f"Here is {EN[(i + 1) % 5]}, number {i}."
        prompt_es, answer_es = f"Háblame de {ES[i % 5]}, número {i}.", f"Aquí está {ES[(i + 1) % 5]}, número {i}."
        if i == 7:
            answer_es = "Sí."  # too short a translation: the length filter drops this sample
        data.append({"id": f"q{i:02d}", "prompt": prompt, "response": answer})
        memory += [{"en": prompt, "es": prompt_es}, {"en": answer, "es": answer_es}]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    (folder / "memory.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in memory),
                                         encoding="utf-8")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from clo_recipes.testing.tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("sweep")
    model = build_tiny_llama(root / "model")
    _write_data(root)
    recipe = write_recipe({
        "name": "tiny", "model": {"base": str(model)},
        "data": {"source": "data.jsonl", "format": "pairs", "samples": 8, "eval_samples": 4},
        "translation": {"filters": {"language_id": False}},
        "method": {"name": "clo", "baselines": []},
        "train": {"max_steps": 1, "global_batch_size": 4, "max_length": 256, "warmup_ratio": 0.0},
        "eval": {"suites": ["nll"], "max_prompts": 4, "batch_size": 4},
        "hardware": {"profile": "cpu", "micro_batch_size": 4},
    }, root)
    axes = parse_grid(GRID)
    points = run_sweep(recipe, axes, base_name="tiny")
    return root, recipe, axes, points


def _stage_dir(run_dir: Path, stage: str) -> Path:
    (found,) = [p for p in run_dir.glob(f"{stage}-*") if not p.name.endswith(".partial")]
    return found


def test_every_point_runs_and_measures_target_and_english_nll(swept):
    _, _, _, points = swept
    assert [p.name for p in points][:3] == ["tiny-4-clo-1", "tiny-4-clo-2", "tiny-4-sft-1"]
    for point in points:
        assert point.error is None, point.error
        assert point.model == point.point["method.name"]
        assert point.metrics["nll"]["n"] == 4 and point.metrics["nll_en"]["n"] == 4
        assert point.stages[f"train-{point.model}"]["status"] == "ran"  # every point trains


def test_data_stages_reference_and_base_evaluation_run_once(swept):
    _, _, _, points = swept
    ran = {}
    for point in points:
        for stage, entry in point.stages.items():
            if entry["status"] == "ran":
                ran.setdefault(stage, []).append(point.name)
    # the first point (8 samples, clo) runs everything; the rest reuse or slice
    assert ran["source"] == ran["translate"] == ran["evaluate-base"] == ["tiny-8-clo-1"]
    assert ran["reference-clo"] == ["tiny-8-clo-1"]
    assert sorted(ran["pairs"]) == ["tiny-4-clo-1", "tiny-8-clo-1"]  # pairs runs on each sliced translation
    first_small = next(p for p in points if p.name == "tiny-4-clo-1")
    for stage in ("source", "translate", "reference-clo", "evaluate-base"):
        assert first_small.stages[stage]["how"] == "slice of the 8-sample run", stage
    assert next(p for p in points if p.name == "tiny-4-clo-2").stages["reference-clo"]["how"] == "same fingerprint"
    assert next(p for p in points if p.name == "tiny-8-sft-2").stages["pairs"]["how"] == "same fingerprint"


def test_reused_stages_equal_an_independent_run(swept, tmp_path):
    from clo_recipes.runner.door import run_recipe

    root, recipe, _, points = swept
    small = next(p for p in points if p.name == "tiny-4-clo-1").run_dir
    alone = run_recipe(recipe, ["data.samples=4", "method.name=clo", "train.seed=1", "name=alone",
                                     f"output_dir={tmp_path}"],
                            only=["source", "translate", "pairs", "reference", "evaluate-base"])
    assert alone.ok
    for stage, files in (("source", ["samples.jsonl", "eval_samples.jsonl"]),
                         ("translate", ["translated.jsonl", "eval_translated.jsonl", "dropped.jsonl"]),
                         ("pairs", ["train.jsonl", "eval.jsonl"])):
        for name in files:
            assert (_stage_dir(small, stage) / name).read_bytes() == (_stage_dir(alone.run_dir, stage) / name).read_bytes()
    dropped = list(read_jsonl(_stage_dir(small, "translate") / "dropped.jsonl"))
    manifest = json.loads((_stage_dir(small, "translate") / "manifest.json").read_text())
    assert manifest["outputs"]["dropped"] == len(dropped) and manifest["derived"]["how"].startswith("slice")
    sliced = {r["id"]: r for r in read_jsonl(_stage_dir(small, "reference-clo") / "reference.jsonl")}
    computed = {r["id"]: r for r in read_jsonl(_stage_dir(alone.run_dir, "reference-clo") / "reference.jsonl")}
    assert set(sliced) == set(computed) and len(sliced) == 3  # 4 drawn, one dropped by the length filter
    for key, row in computed.items():
        assert sliced[key]["tokens"] == row["tokens"]
        for name, value in row["logps"].items():
            assert sliced[key]["logps"][name] == pytest.approx(value, abs=1e-4)  # batch padding rounding only
    base = json.loads((_stage_dir(small, "evaluate-base") / "metrics.json").read_text())["suites"]["nll"]
    again = json.loads((_stage_dir(alone.run_dir, "evaluate-base") / "metrics.json").read_text())["suites"]["nll"]
    assert base["es"]["nll"] == pytest.approx(again["es"]["nll"], rel=1e-5)


def test_a_rerun_skips_finished_points_and_resumes_an_interrupted_one(swept):
    root, recipe, axes, points = swept
    last = points[-1]
    for stage in ("report", f"evaluate-{last.model}"):
        shutil.rmtree(_stage_dir(last.run_dir, stage))
    again = run_sweep(recipe, axes, base_name="tiny")
    ran = {(p.name, s) for p in again for s, e in p.stages.items() if e["status"] == "ran"}
    assert ran == {(last.name, f"evaluate-{last.model}"), (last.name, "report")}
    assert [p.metrics["nll"]["value"] for p in again] == pytest.approx([p.metrics["nll"]["value"] for p in points])


def test_sweep_files_aggregate_seeds_with_one_plot_per_metric(swept, tmp_path):
    _, _, axes, points = swept
    written = write_sweep(points, axes, ["nll", "nll_en"], tmp_path / "out", title="tiny")
    assert [p.name for p in written] == ["sweep.json", "sweep.md", "data_efficiency_nll.png",
                                         "data_efficiency_nll_en.png", "sweep.html"]
    assert axis_keys(axes) == ("data.samples", "method.name")  # the seed is neither the x axis nor a line
    groups = aggregate_seeds(points, "nll")
    assert len(groups) == 4 and all(len(g.values) == 2 for g in groups)
    text = (tmp_path / "out" / "sweep.md").read_text()
    clo4 = next(g for g in groups if g.point == {"data.samples": "4", "method.name": "clo"})
    assert f"| 4 | {clo4.mean:.3f} [{min(clo4.values):.3f}–{max(clo4.values):.3f}] (2 seeds)" in text
    assert "Does CLO at n match or beat SFT at 2n?" in text
    document = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert document["seed_axes"] == ["train.seed"] and document["stages_run"] > 0 and document["stages_reused"] > 0
    assert document["stage_seconds_avoided"] > 0  # what the reused stages took where they ran


def _point(samples: str, method: str, seed: str, value: float) -> SweepPoint:
    return SweepPoint({"data.samples": samples, "method.name": method, "train.seed": seed}, "p", None, method,
                      {"fidelity": {"value": value, "low": value - 0.1, "high": value + 0.1, "n": 40}})


def test_paper_reading_compares_clo_at_n_with_sft_at_2n():
    points = [_point("32", "clo", "1", 0.80), _point("32", "clo", "2", 0.90), _point("64", "sft", "1", 0.70),
              _point("64", "sft", "2", 0.72), _point("64", "clo", "1", 0.6), _point("128", "sft", "1", 0.9)]
    rows = paper_reading(points, "fidelity", "data.samples", "method.name")
    assert rows[2] == "| 32 | 85.0 [80.0–90.0] (2 seeds) | 64 | 71.0 [70.0–72.0] (2 seeds) | clo matches or beats |"
    assert rows[3] == "| 64 | 60.0 [50.0–70.0] | 128 | 90.0 [80.0–100.0] | clo falls short of |"  # one seed: its CI
    lower = [SweepPoint({"data.samples": "8", "method.name": m}, "p", None, m, {"nll": {"value": v, "low": v, "high": v}})
             for m, v in (("clo", 2.0),)] + [SweepPoint({"data.samples": "16", "method.name": "sft"}, "p", None, "sft",
                                                         {"nll": {"value": 2.5, "low": 2.5, "high": 2.5}})]
    assert paper_reading(lower, "nll", "data.samples", "method.name")[2].endswith("clo matches or beats |")


def test_the_shipped_sweep_file_names_the_demo_grid():
    from conftest import REPO

    spec = load_sweep_file(REPO / "recipes" / "sweeps" / "demo_efficiency.yaml")
    assert spec.recipe.resolve() == (REPO / "recipes" / "demo_cpu.yaml").resolve()
    axes = dict(parse_grid(spec.grid))
    assert list(axes) == ["data.samples", "method.name", "train.seed"]
    sizes = [int(v) for v in axes["data.samples"]]
    assert len(sizes) >= 3 and all(b == 2 * a for a, b in zip(sizes, sizes[1:]))  # CLO at n vs SFT at 2n
    assert axes["method.name"] == ["clo", "sft"] and len(axes["train.seed"]) >= 2
    assert "method.baselines=[]" in spec.overrides and spec.metrics == ["fidelity", "nll", "nll_en", "mc"]


def test_compare_folds_runs_that_differ_only_in_seed(swept, tmp_path):
    from clo_recipes.evaluation.compare import collect, markdown
    from clo_recipes.evaluation.runs import load_run

    _, _, _, points = swept
    chosen = [p for p in points if p.point["data.samples"] == "8"]  # clo x2 seeds, sft x2 seeds
    runs = [load_run(p.run_dir) for p in chosen]
    folded = collect(runs)
    rows = {entry.row_label: entry for entry in folded.entries}
    assert set(rows) == {"base", "clo (2 seeds)", "sft (2 seeds)"}  # base: one evaluation, shared
    clo = [p.metrics["nll"]["value"] for p in chosen if p.model == "clo"]
    stats = rows["clo (2 seeds)"].metrics["nll"]
    assert stats["value"] == pytest.approx(sum(clo) / 2)
    assert (stats["low"], stats["high"]) == (min(clo), max(clo)) and stats["seeds"] == 2
    assert "2 seeds, mean [min–max over seeds]" in markdown(folded)
    separate = collect(runs, aggregate_seeds=False)
    assert len([e for e in separate.entries if e.model == "clo"]) == 2


def test_sweep_command_refuses_bad_sweep_files_before_running(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: ../demo_cpu.yaml\ngrid: {data.samples: [32]}\nmetric: [nll]\n", encoding="utf-8")
    cases = ((bad, [], "is not a sweep file (unknown keys: metric)"),
             (REPO / "recipes" / "demo_cpu.yaml", [], "needs at least one --grid"),
             (REPO / "recipes" / "sweeps" / "demo_efficiency.yaml", ["--grid", "train.sed=1,2"], "did you mean 'seed'?"))
    for path, extra, message in cases:
        shown = subprocess.run([sys.executable, "-m", "clo_recipes", "sweep", str(path), *extra, "--out", str(tmp_path / "o")],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert shown.returncode == 2 and message in shown.stderr, shown.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()
