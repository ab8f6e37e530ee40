"""CLO training on 1 process vs 2 processes (torchrun, gloo, accelerate's DDP) on CPU, in one run.

    python benchmarks/scaling_cpu.py                    # 1x1 and 2x1, twice each: about two minutes on 2 idle cores
    python benchmarks/scaling_cpu.py --configs 1x1,2x1,1x2 --repeats 1

Every configuration trains the same Llama-shaped model (fp32, attention-only, AdamW) through
the engine's own `Trainer` on the same CLO samples with the same global batch, so each step
sees the same samples and the step-1 loss must agree across configurations. Configurations
(processes x torch threads per process):

    1x1  one process, one thread: the baseline
    2x1  `torchrun --standalone --nproc_per_node 2`: DDP over gloo, one thread each (both cores)
    1x2  one process, two threads: the other way to use both cores (not by default: on a
         CPU shared with other jobs its spinning threads stall, and the figure says little)

Throughput is trained tokens (all ranks, no padding) per second over the steps after the
first, the best of `--repeats` alternating runs; memory is each process's peak resident set
(ru_maxrss) and its growth while training. Gradient-sync overhead: after training, each
process times forward and backward of one micro-batch of the DDP-wrapped model inside
`accelerator.no_sync` (no all-reduce) and outside it (the all-reduce of every gradient bucket,
as on the last micro-batch of each training step), alternately, and keeps each one's fastest
round; the difference is what one step pays for syncing. The bare all-reduce of a buffer the
size of the trainable weights is timed too.

Note: with one process the engine forwards each micro-batch in up to four length-sorted
chunks (less padding); distributed wrappers expect one forward per backward, so with two
processes each micro-batch is one padded forward. That is part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from probes import PeakMemory  # noqa: E402  (the shared memory probe)
from train_throughput import make_rows  # noqa: E402  (same data)

CONFIGS = {"1x1": (1, 1), "2x1": (2, 1), "1x2": (1, 2)}


# ---- setup (driver) ------------------------------------------------------------------------

def prepare(folder: Path, args) -> None:
    """The tiny model, the rows, and their reference log-probs (computed once, shared)."""
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.testing.tiny import build_tiny_llama
    from clo_recipes.training.chat import ChatRenderer
    from clo_recipes.training.data import PREFERENCE_SEQUENCES, build_examples
    from clo_recipes.training.loading import load_model, load_tokenizer
    from clo_recipes.training.reference import compute_reference, write_reference

    build_tiny_llama(folder / "model", hidden=args.hidden, layers=args.layers, heads=4)
    rows = make_rows(args.samples, seed=1)
    (folder / "rows.json").write_text(json.dumps(rows, ensure_ascii=False))
    section = ModelSection(base=str(folder / "model"))
    tokenizer = load_tokenizer(section)
    found = build_examples(rows, ChatRenderer(tokenizer), PREFERENCE_SEQUENCES, args.max_length)
    if found.dropped_too_long:
        raise SystemExit(f"{found.dropped_too_long} samples exceed --max-length {args.max_length}; raise it")
    model = load_model(section, for_training=True)
    logps = compute_reference(model, found.examples, PREFERENCE_SEQUENCES, pad_id=tokenizer.pad_token_id,
                              device="cpu")
    write_reference(folder / "reference.jsonl", found.examples, logps)


# ---- one configuration (every rank) --------------------------------------------------------

def build_job(folder: Path, work: Path, args):
    from clo_recipes.recipe.schema.adapter import AdapterSection
    from clo_recipes.recipe.schema.hardware import HardwareSection
    from clo_recipes.recipe.schema.method import MethodSection
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.recipe.schema.train import TrainSection
    from clo_recipes.training.loop import TrainJob

    return TrainJob(
        arm="clo", model=ModelSection(base=str(folder / "model")), method=MethodSection(name="clo"),
        adapter=AdapterSection(kind="full", trainable=args.trainable),
        train=TrainSection(max_steps=args.steps, learning_rate=1e-5, warmup_ratio=0.0, scheduler="constant",
                           global_batch_size=args.global_batch, max_length=args.max_length, save_steps=10**6),
        hardware=HardwareSection(profile="cpu", precision="fp32", attention="sdpa", optimizer="adamw_torch",
                                 micro_batch_size=args.micro_batch, gradient_checkpointing=False),
        rows=json.loads((folder / "rows.json").read_text()), work_dir=work, identity={"benchmark": "scaling"},
        reference_file=folder / "reference.jsonl", show_progress=False,
    )


def least_ms(values: list[float]) -> float:
    """The fastest round: on a shared CPU other jobs only ever add time."""
    return 1000 * min(values)


def sync_probe(trainer, args) -> dict:
    """Forward and backward of one micro-batch with and without DDP's gradient all-reduce."""
    import torch

    from clo_recipes.training.batch import collate, forward_logps
    from clo_recipes.training.objectives import objective_for

    accelerator, model = trainer.accelerator, trainer.model
    rank = accelerator.process_index
    objective = objective_for("clo", trainer.job.method)
    micro = trainer.examples[rank * args.micro_batch:(rank + 1) * args.micro_batch]
    denominators = objective.denominators(micro)
    batch = collate(micro, objective.names, trainer.pad_id, with_reference=True).to(accelerator.device)
    timings: dict[str, list[tuple[float, float]]] = {"no_sync": [], "sync": []}
    for repeat in range(args.probe_repeats + 1):  # the first round warms up
        for mode in ("no_sync", "sync"):
            accelerator.wait_for_everyone()  # both ranks start together: waiting for a slow rank is sync cost
            with accelerator.no_sync(model) if mode == "no_sync" else nullcontext():
                started = time.perf_counter()
                with accelerator.autocast():
                    out = objective.loss(forward_logps(model, batch), batch.reference_logps(), denominators)
                forwarded = time.perf_counter()
                accelerator.backward(out.loss)
                done = time.perf_counter()
            model.zero_grad(set_to_none=True)
            if repeat:
                timings[mode].append((forwarded - started, done - forwarded))
    result = {f"{mode}_{part}_ms": least_ms([t[i] for t in times])
              for mode, times in timings.items() for i, part in enumerate(("forward", "backward"))}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result["gradient_mb"] = trainable * 4 / 2**20
    if accelerator.num_processes > 1:
        buffer = torch.ones(trainable, dtype=torch.float32)
        seconds = []
        for repeat in range(args.probe_repeats + 1):
            accelerator.wait_for_everyone()
            started = time.perf_counter()
            torch.distributed.all_reduce(buffer)
            if repeat:
                seconds.append(time.perf_counter() - started)
        result["all_reduce_ms"] = least_ms(seconds)
    return result


def run_child(args) -> None:
    import torch

    from clo_recipes.training.loop import Trainer

    torch.set_num_threads(args.threads)
    folder = args.folder
    work = folder / f"work-{args.label}"
    work.mkdir(exist_ok=True)
    trainer = Trainer(build_job(folder, work, args))
    with PeakMemory() as memory:
        trainer.run()
    probe = sync_probe(trainer, args)
    rank = trainer.accelerator.process_index
    result = {"rank": rank, "processes": trainer.accelerator.num_processes, "threads": torch.get_num_threads(),
              "distributed_type": str(trainer.accelerator.distributed_type),
              "train_memory_mb": memory.growth_mb,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **probe}
    (folder / f"result-{args.label}-rank{rank}.json").write_text(json.dumps(result))


# ---- driver --------------------------------------------------------------------------------

def launch(label: str, folder: Path, args, repeat: int) -> dict:
    processes, threads = CONFIGS[label]
    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
              if k not in ("child", "folder", "configs", "label", "threads", "json", "repeats")]
    run_label = f"{label}-{repeat}"
    script = [__file__, "--child", "--folder", str(folder), "--label", run_label, f"--threads={threads}", *passed]
    if processes == 1:
        command = [sys.executable, *script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   *script]
    # ACCELERATE_USE_CPU is what `accelerate launch --cpu` sets: without it accelerate ignores
    # torchrun's ranks on a machine without GPUs and every process trains alone
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"configuration {label} failed:\n{done.stderr[-4000:]}")
    if processes > 1 and not (folder / f"result-{run_label}-rank1.json").is_file():
        raise SystemExit(f"configuration {label}: the processes did not form one distributed group")
    ranks = [json.loads((folder / f"result-{run_label}-rank{r}.json").read_text()) for r in range(processes)]
    steps = [json.loads(line) for line in (folder / f"work-{run_label}" / "metrics.jsonl").read_text().splitlines()]
    timed = steps[1:]  # the first step warms up allocators and kernels
    tokens, seconds = sum(s["tokens"] for s in timed), sum(s["seconds"] for s in timed)
    return {"label": label, "processes": processes, "threads": threads, "ranks": ranks,
            "step1_loss": steps[0]["loss"], "final_loss": steps[-1]["loss"], "tokens_per_second": tokens / seconds,
            "step_seconds": seconds / len(timed), "wall_seconds": time.perf_counter() - started}


def table(results: dict[str, dict], args) -> list[str]:
    base = results.get("1x1")
    labels = list(results)
    names = [f"{results[k]['processes']} proc x {results[k]['threads']} thr" for k in labels]
    header = f"{'':34}" + "".join(f"{name:>18}" for name in names)
    lines = [header]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"{name:34}" + "".join(f"{v:>18}" for v in values))

    def per_rank(result: dict, key: str) -> float:
        return max(rank[key] for rank in result["ranks"])

    row("step-1 loss", [f"{results[k]['step1_loss']:.6f}" for k in labels])
    row("tokens/s (all processes)", [f"{results[k]['tokens_per_second']:.0f}" for k in labels])
    row("tokens/s per process", [f"{results[k]['tokens_per_second'] / results[k]['processes']:.0f}" for k in labels])
    if base:
        row("speed-up vs 1 proc x 1 thr", [f"{results[k]['tokens_per_second'] / base['tokens_per_second']:.2f}x"
                                           for k in labels])
        row("scaling efficiency (per core)",
            [f"{results[k]['tokens_per_second'] / base['tokens_per_second'] / (results[k]['processes'] * results[k]['threads']):.0%}"
             for k in labels])
    row("seconds per step", [f"{results[k]['step_seconds']:.2f}" for k in labels])
    row("peak RSS per process (MiB)", [f"{per_rank(results[k], 'peak_rss_mb'):.0f}" for k in labels])
    row("train memory growth / proc (MiB)", [f"{per_rank(results[k], 'train_memory_mb'):.0f}" for k in labels])
    row("peak RSS, all processes (MiB)", [f"{sum(r['peak_rss_mb'] for r in results[k]['ranks']):.0f}" for k in labels])
    if base:
        row("RSS all procs vs 1 proc x 1 thr",
            [f"{sum(r['peak_rss_mb'] for r in results[k]['ranks']) / base['ranks'][0]['peak_rss_mb']:.2f}x"
             for k in labels])
    row("micro-batch backward, no sync (ms)", [f"{per_rank(results[k], 'no_sync_backward_ms'):.0f}" for k in labels])
    row("micro-batch backward, sync (ms)", [f"{per_rank(results[k], 'sync_backward_ms'):.0f}" for k in labels])
    sync_ratio, overhead, share, reduce_ms = [], [], [], []
    for k in labels:
        result = results[k]
        if result["processes"] == 1:
            sync_ratio.append("-"), overhead.append("-"), share.append("-"), reduce_ms.append("-")
            continue
        sync, no_sync = per_rank(result, "sync_backward_ms"), per_rank(result, "no_sync_backward_ms")
        sync_ratio.append(f"{sync / no_sync:.2f}x")
        overhead.append(f"{sync - no_sync:.0f}")
        # one synced backward per optimizer step (the last micro-batch)
        share.append(f"{(sync - no_sync) / (1000 * result['step_seconds']):.1%}")
        reduce_ms.append(f"{per_rank(result, 'all_reduce_ms'):.0f}")
    row("backward sync / no sync", sync_ratio)
    row("sync overhead per step (ms)", overhead)
    row("sync overhead, share of a step", share)
    gradient_mb = results[labels[0]]["ranks"][0]["gradient_mb"]
    row(f"bare all-reduce {gradient_mb:.0f} MiB fp32 (ms)", reduce_ms)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=640, help="above every sample: nothing dropped")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--trainable", default="attention", choices=["all", "attention"])
    parser.add_argument("--probe-repeats", type=int, default=5, help="timed rounds of the sync probe")
    parser.add_argument("--configs", default="1x1,2x1", help=f"comma-separated, from {sorted(CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration, alternating; best kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    labels = [label.strip() for label in args.configs.split(",") if label.strip()]
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {sorted(CONFIGS)}")
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clo-scaling-") as tmp:
        folder = Path(tmp)
        prepare(folder, args)
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {label: [] for label in labels}
        for repeat in range(args.repeats):  # alternate, so background load hits every configuration alike
            for label in labels:
                runs[label].append(launch(label, folder, args, repeat))
        load_after = os.getloadavg()[0]
    results = {label: max(found, key=lambda r: r["tokens_per_second"]) for label, found in runs.items()}
    print(f"model: Llama-shaped, hidden {args.hidden}, {args.layers} layers, trainable: {args.trainable}; "
          f"{args.samples} CLO samples; global batch {args.global_batch}, micro-batch {args.micro_batch} per "
          f"process; {args.steps} steps (first not timed); fp32; {cores} CPU core(s) seen")
    for line in table(results, args):
        print(line)
    losses = [r["step1_loss"] for r in results.values()]
    spread = max(losses) - min(losses)
    print(f"same step-1 loss in every configuration (within 1e-5): {'yes' if spread < 1e-5 else 'NO'} "
          f"(spread {spread:.1e})")
    if args.repeats > 1:
        every = {label: ", ".join(f"{r['tokens_per_second']:.0f}" for r in found) for label, found in runs.items()}
        print("tokens/s of every run: " + "; ".join(f"{label}: {values}" for label, values in every.items()))
    print(f"1-minute load average {load_before:.1f} before, {load_after:.1f} after ({cores} cores): above the core "
          f"count, other jobs shared the CPU and the figures are lower bounds")
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"best": results, "runs": runs, "load_average": [load_before, load_after],
                                         "cores": cores}, indent=1))


if __name__ == "__main__":
    main()
