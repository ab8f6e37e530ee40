"""The demo's evaluation stages (base + 2 arms, English + Portuguese prompts) run through the
real evaluate stage twice in one process, with `generation_backend: transformers` and with
`vllm` (the managed server the stage starts and stops), on the same prompts and model. Wall
time is the stage's whole `run` (server start and model load included), suites `fidelity`
only so generation is what is measured.

The arms are the base model's folder served as a trained arm's saved weights (full weights,
like the demo's `adapter.kind: full`): a server's start and speed do not depend on the
values of the weights, and no training has to run first. Prompts are the demo's held-out
English prompts and their Portuguese from the Italian memory file's pairs (hand-written; the
language only changes what the model answers).

The break-even is the prompt count per stage where the server's start is paid back:
(server start - transformers model load) / (transformers s per prompt - vLLM s per prompt).
`eval.vllm.break_even_prompts` (what `generation_backend: auto` uses) comes from it.

    HF_HUB_OFFLINE=1 python benchmarks/eval_backends.py [--prompts 40] [--max-new-tokens 48] [--arms 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from probes import load_average  # noqa: E402


def held_out(count: int) -> list[dict]:
    data = ROOT / "recipes" / "data"
    italian = {row["en"]: row["it"] for row in map(json.loads, (data / "demo_memory_it.jsonl").open())}
    rows = [json.loads(line) for line in (data / "demo_en.jsonl").open()]
    rows = [row for row in rows if row["prompt"] in italian][-count:]  # the demo holds out from the end
    return [{"id": row["id"], "x_en": row["prompt"], "y_en": row["response"], "x_l": italian[row["prompt"]],
             "y_l": italian.get(row["response"], row["response"])} for row in rows]


def run_stages(backend: str, args, folder: Path, python: str, root: Path, pairs: Path) -> list[dict]:
    from eval_context import make_context

    from clo_recipes.stages import evaluate

    recipe = {"model": {"base": str(folder)}, "language": "it", "method": {"name": "clo", "baselines": ["sft"]},
              "adapter": {"kind": "full"},
              "eval": {"suites": ["fidelity"], "max_prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
                       "batch_size": args.batch_size, "generation_backend": backend,
                       "vllm": {"python": python, "max_model_len": 1024, "concurrency": args.concurrency}}}
    results = []
    for arm in range(args.arms):
        stage = "evaluate-base" if arm == 0 else ("evaluate-clo", "evaluate-sft")[(arm - 1) % 2]
        tmp = root / backend / f"arm{arm}"
        inputs = {"pairs": pairs}
        if arm:
            train = tmp / "train-done"
            train.mkdir(parents=True)
            (train / "model").symlink_to(folder)  # a full-weights arm's saved folder
            inputs["train"] = train
        ctx = make_context(recipe, stage, tmp, inputs)
        started = time.perf_counter()
        evaluate.run(ctx)
        wall = time.perf_counter() - started
        metrics = json.loads((ctx.work_dir / "metrics.json").read_text())
        answers = [row["answer"] for row in map(json.loads, (ctx.work_dir / "answers.jsonl").open())]
        results.append({"stage": stage, "wall_s": wall, "generation": metrics["generation"],
                        "fidelity": {k: v["share"] for k, v in metrics["suites"]["fidelity"].items()},
                        "answers": answers})
        print(f"  {backend:12s} {stage:14s} {wall:7.1f} s  {json.dumps(metrics['generation'])[:160]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40, help="prompts per language per stage")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers generate batch (the demo's)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight to the server")
    parser.add_argument("--arms", type=int, default=3)
    args = parser.parse_args()

    import real_server
    import torch

    python = str(real_server.ensure_venv())
    folder = real_server.model_folder()
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load {load_average()}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        pairs = root / "pairs-done"
        pairs.mkdir()
        from clo_recipes.engine.context import write_jsonl

        write_jsonl(pairs / "eval.jsonl", held_out(args.prompts))
        started = time.perf_counter()
        slow = run_stages("transformers", args, folder, python, root, pairs)
        slow_s = time.perf_counter() - started
        started = time.perf_counter()
        fast = run_stages("vllm", args, folder, python, root, pairs)
        fast_s = time.perf_counter() - started

    n = 2 * args.prompts
    start = sum(r["generation"]["start_s"] for r in fast) / len(fast)
    fast_per = sum(r["generation"]["answer_s"] for r in fast) / (n * len(fast))
    slow_per = sum(r["generation"]["answer_s"] for r in slow) / (n * len(slow))
    load_s = sum(r["generation"]["wall_s"] - r["generation"]["answer_s"] for r in slow) / len(slow)
    identical = sum(a == b for s, f in zip(slow, fast) for a, b in zip(s["answers"], f["answers"]))
    print(f"load after: {load_average()}")
    print(f"\n{args.arms} evaluate stages x {n} prompts ({args.prompts} per language), {args.max_new_tokens} new tokens:")
    print(f"  transformers: {slow_s:7.1f} s   ({slow_per:.2f} s/prompt, model load {load_s:.1f} s per stage)")
    print(f"  vLLM server : {fast_s:7.1f} s   ({fast_per:.2f} s/prompt, server start {start:.1f} s per stage)")
    print(f"  speed-up end to end: {slow_s / fast_s:.2f}x")
    if slow_per > fast_per:
        print(f"  break-even: {max(0.0, (start - load_s) / (slow_per - fast_per)):.0f} prompts per stage")
    print(f"  identical answers: {identical} of {n * args.arms}; fidelity "
          + ", ".join(f"{r['stage']} {r['fidelity']} vs {f['fidelity']}" for r, f in zip(slow, fast)))


if __name__ == "__main__":
    main()
