"""What stage reuse saves a data-efficiency sweep: the same cut-down sweep run twice, with
reuse (`clo-recipe sweep`'s default) and with `--no-reuse` (every point an independent run),
in the same process, each in a fresh output folder, sharing one translation cache that is
warmed first (so neither side pays the one-off translation; the cache made re-translation
free before reuse existed). Prints stage-seconds (the summed time of the stages that ran),
wall time, CPU time of the process (robust to other load on a shared machine), how many
stages ran, and the training stages' share, as ratios.

    python benchmarks/sweep_reuse.py                  # tiny random model, seconds
    python benchmarks/sweep_reuse.py --model demo     # the CPU demo (SmolLM2-135M), cut down, minutes

`--model demo` sweeps recipes/demo_cpu.yaml with data.samples=16,32 x clo,sft, one seed,
2 optimizer steps and 8 prompts per language of 16 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EN = ["the cat on the mat", "the dog in the park", "water at one hundred degrees", "an egg in boiling water",
      "good morning to you"]
ES = ["el gato en la alfombra", "el perro en el parque", "el agua a cien grados", "un huevo en agua hirviendo",
      "buenos días a ti"]


def tiny_recipe(root: Path) -> tuple[Path, list[str], list[str]]:
    from clo_recipes.runner.testing import write_recipe
    from clo_recipes.testing.tiny import build_tiny_llama

    model = build_tiny_llama(root / "model")
    data, memory = [], []
    for i in range(48):
        prompt, answer = f"Tell me about {EN[i % 5]}, number {i}.", f"Here is {EN[(i + 1) % 5]}, number {i}."
        data.append({"id": f"q{i:02d}", "prompt": prompt, "response": answer})
        memory += [{"en": prompt, "es": f"Háblame de {ES[i % 5]}, número {i}."},
                   {"en": answer, "es": f"Aquí está {ES[(i + 1) % 5]}, número {i}."}]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    (root / "memory.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in memory),
                                       encoding="utf-8")
    recipe = write_recipe({
        "name": "tiny", "model": {"base": str(model)},
        "data": {"source": "data.jsonl", "format": "pairs", "samples": 32, "eval_samples": 8},
        "translation": {"filters": {"language_id": False}}, "method": {"name": "clo", "baselines": []},
        "train": {"max_steps": 2, "global_batch_size": 4, "max_length": 256, "warmup_ratio": 0.0},
        "eval": {"suites": ["fidelity", "mc", "nll"], "max_prompts": 8, "max_new_tokens": 8, "batch_size": 8},
        "hardware": {"profile": "cpu", "micro_batch_size": 4},
    }, root)
    return recipe, ["data.samples=8,16,32", "method.name=clo,sft"], []


def demo_recipe(root: Path) -> tuple[Path, list[str], list[str]]:
    extra = ["method.baselines=[]", "train.max_steps=2", "train.save_steps=1", "eval.max_prompts=8",
             "eval.max_new_tokens=16", f"cache_dir={root / 'cache'}"]
    return REPO / "recipes" / "demo_cpu.yaml", ["data.samples=16,32", "method.name=clo,sft"], extra


def sweep(recipe: Path, grid: list[str], extra: list[str], out: Path, reuse: bool) -> dict:
    from clo_recipes.runner.sweep import parse_grid, run_sweep
    from clo_recipes.recipe.load import load_recipe

    name = load_recipe(recipe, extra).recipe.name
    started, cpu_started = time.perf_counter(), time.process_time()
    points = run_sweep(recipe, parse_grid(grid), base_name=name, extra=[*extra, f"output_dir={out}"], reuse=reuse)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    failed = [p.name for p in points if p.error]
    if failed:
        raise SystemExit(f"points failed: {failed}: {points[0].error}")
    ran = [(stage, entry) for p in points for stage, entry in p.stages.items() if entry["status"] == "ran"]
    by_kind: dict[str, float] = {}
    for stage, entry in ran:
        kind = stage.split("-")[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + entry["seconds"]
    return {"by_kind": {k: round(v, 1) for k, v in by_kind.items()}, "cpu_s": cpu,"wall_s": wall, "stage_s": sum(e["seconds"] for _, e in ran), "stages_run": len(ran),
            "train_s": sum(e["seconds"] for s, e in ran if s.startswith("train-")), "points": len(points),
            "reused": sum(e["status"] == "reused" for p in points for e in p.stages.values()),
            "avoided_s": sum(e.get("avoided_s", 0.0) for p in points for e in p.stages.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "demo"], default="tiny")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        recipe, grid, extra = (tiny_recipe if args.model == "tiny" else demo_recipe)(root)
        from clo_recipes.runner.door import run_recipe

        largest = max(grid[0].partition("=")[2].split(","), key=float)
        run_recipe(recipe, [*extra, f"data.samples={largest}", f"output_dir={root / 'warm'}"],
                        only=["source", "translate"])  # warm the shared translation cache
        with_reuse = sweep(recipe, grid, extra, root / "reuse", True)
        without = sweep(recipe, grid, extra, root / "independent", False)
    print(f"sweep {' x '.join(g.partition('=')[2] for g in grid)} ({with_reuse['points']} points, {args.model} model)")
    for label, result in (("independent runs", without), ("with reuse", with_reuse)):
        print(f"  {label:17s} stage-seconds {result['stage_s']:8.1f}  wall {result['wall_s']:8.1f} s  "
              f"cpu {result['cpu_s']:8.1f} s  stages run {result['stages_run']:3d}  of which training "
              f"{result['train_s']:7.1f} s"
              + (f"  reused {result['reused']} (they took {result['avoided_s']:.1f} s where they ran)"
                 if result["reused"] else ""))
        print(f"    {'':17s} stage-seconds by kind: {result['by_kind']}")
    print(f"  reuse / independent: stage-seconds {with_reuse['stage_s'] / without['stage_s']:.2f}, "
          f"wall {with_reuse['wall_s'] / without['wall_s']:.2f}, cpu {with_reuse['cpu_s'] / without['cpu_s']:.2f} "
          "(CPU time of this process: the least disturbed by other load on the machine)")
    print(f"  training share of stage-seconds: independent {without['train_s'] / without['stage_s']:.2f}, "
          f"with reuse {with_reuse['train_s'] / with_reuse['stage_s']:.2f}")


if __name__ == "__main__":
    main()
