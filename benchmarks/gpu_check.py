"""The prepared GPU check: CLO training speed and memory on a Llama-3-8B shape, QLoRA, CUDA tests, TRL.

    python benchmarks/gpu_check.py --out $OUT/gpu_check.json      # one GPU, no network, 300 s budget
    python benchmarks/gpu_check.py --cpu-tiny --out /tmp/gc.json  # the same path, tiny model, CPU (CI runs this)

Parts, most valuable first; each is recorded in the JSON as soon as it ends (report.py), so a
run cut short keeps what it finished, a part that fails is recorded with its error while the
rest go on, and a part that would end past --budget-s is skipped, saying so. The peak-memory
counter is reset per part (probes.py), and each training part records its parameter bytes by
dtype and which log-prob path the engine chose (streamed from 32,768 tokens of vocabulary).

1. A randomly initialised model of Llama-3-8B's shape (shapes.py, from `known_models.py`;
   config only, nothing to download), saved once in bf16 (under /dev/shm when it has room).
   --cpu-tiny: a 2-layer Llama whose 32,768-token vocabulary also takes the streamed path.
2. `clo`: the engine's own `Trainer` (prepare data, load, reference log-probs, the training
   phase), bf16 autocast, attention-only (q/k/v/o trained in fp32, AdamW), gradient
   checkpointing as the single-80gb profile; tokens/s, MFU and peak memory against `plan`'s
   estimate (`hardware/memory.py`) for the same setup.
3. `qlora`: the same Trainer with `adapter.kind: qlora` (the engine's loading path: NF4 base,
   LoRA r=16 on the attention projections) when bitsandbytes imports (on CPU its CPU backend).
4. `tests`: `pytest -m cuda` over the test files that carry the marker (all skip on CPU).
5. `trl_dpo` (trl_dpo.py): the same samples (each CLO sample = its two cross-lingual
   preference pairs), the same global batch, micro-batch, steps, trainable weights, fp32
   master weights and checkpointing through TRL's `DPOTrainer`: the ratio.

FLOP count (shapes.count_flops; model FLOPs, PaLM's convention: causal attention counted as full, norms and
softmax left out), per sequence of s tokens with a answer tokens:

    (4·N_body + 2·N_trained + 6·N_adapter)·s + 4·N_head·(a + 1) + 12·L·d·s²

N_body: decoder-block linear weights; N_trained: those of them trained in place (their weight
gradients, 2 FLOPs per weight and token); N_adapter: LoRA weights (forward, input and weight
gradients); N_head: the output projection, computed only on the answer positions (the
engine's `logits_to_keep`; TRL computes every position, which is its overhead, not extra
model FLOPs); the embedding lookup costs none. Forward = 2 per weight and token, backward
input gradients = 2 more (everything sits above the first trained weight), attention scores
3 x forward (4·L·d·s² forward). Hardware FLOPs add the recomputed forward of the decoder
blocks under gradient checkpointing: + (2·N_body + 2·N_adapter)·s + 4·L·d·s². MFU = model
FLOPs/s ÷ peak dense bf16 FLOP/s (H100/H200 SXM: 989 TFLOP/s; --peak-tflops to override);
HFU the same with hardware FLOPs. Tokens are the non-padding tokens of all four sequences.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the benchmarks' shared modules (this folder): shapes and FLOPs, memory probes, the report, TRL's side
from probes import WORDS_EN, WORDS_ES, DeviceMemory, environment, parameter_bytes, release  # noqa: E402
from report import Report, part, ratios, run_tests, summary  # noqa: E402
from shapes import LLAMA3_8B, TINY_LLAMA, FlopCounts, build_random_llama, count_flops, shape  # noqa: E402
from trl_dpo import run_trl  # noqa: E402

# Dense bf16 tensor-core peaks from the vendor data sheets (SXM parts), TFLOP/s.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}


# ---- data ----------------------------------------------------------------------------------

def make_rows(count: int, seed: int, answer_words: int) -> list[dict]:
    """CLO quadruples whose answers all have about `answer_words` words (80-100 %), so the
    longest micro-batch, which `plan` estimates, is close to the typical one."""
    rng = random.Random(seed)

    def sentence(words, n):
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    rows = []
    for i in range(count):
        q, a = rng.randint(12, 20), rng.randint(int(0.8 * answer_words), answer_words)
        rows.append({"id": f"g{i:04d}", "x_en": sentence(WORDS_EN, q), "y_en": sentence(WORDS_EN, a),
                     "x_l": sentence(WORDS_ES, q + rng.randint(0, 3)), "y_l": sentence(WORDS_ES, a)})
    return rows


# ---- model ---------------------------------------------------------------------------------

def model_config(cpu_tiny: bool) -> dict[str, Any]:
    return dict(TINY_LLAMA) if cpu_tiny else shape(LLAMA3_8B)


def workspace(cpu_tiny: bool, config: dict[str, Any]) -> Path:
    """/dev/shm when it can hold the bf16 weights twice over (no disk I/O), else the temp dir."""
    from clo_recipes.hardware.architecture import Architecture

    need = 2 * 2 * Architecture.from_config(config).total_params
    shm = Path("/dev/shm")
    if not cpu_tiny and shm.is_dir() and shutil.disk_usage(shm).free > need:
        return Path(tempfile.mkdtemp(prefix="clo-gpu-check-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="clo-gpu-check-"))


# ---- memory --------------------------------------------------------------------------------

def plan_estimate(config: dict[str, Any], setup: dict[str, Any], longest: int) -> dict[str, Any]:
    """`plan`'s estimate for this run, at the longest sequence the run trains on."""
    from clo_recipes.hardware.memory import CUDA_CONTEXT_GB, estimate_memory

    estimate = estimate_memory(
        config, adapter_kind=setup["adapter_kind"], trainable="attention", method_name="clo", max_length=longest,
        micro_batch_size=setup["micro_batch"], precision="bf16", quantization=setup["quantization"],
        gradient_checkpointing=setup["checkpointing"], optimizer="adamw_torch", sharding="none", world_size=1,
        cpu_offload=False, gpu_memory_gb=None, attention=setup["attention"], lora_rank=16, lora_dropout=0.05)
    return {"total_gib": estimate.total_gb, "without_cuda_context_gib": estimate.total_gb - CUDA_CONTEXT_GB,
            "breakdown_gib": estimate.breakdown, "trainable_parameters": estimate.trainable_params}


# ---- parts ---------------------------------------------------------------------------------

def clo_job(folder: Path, rows: list[dict], args, setup: dict[str, Any], work: Path):
    from clo_recipes.recipe.schema.adapter import AdapterSection
    from clo_recipes.recipe.schema.hardware import HardwareSection
    from clo_recipes.recipe.schema.method import MethodSection
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.recipe.schema.train import TrainSection
    from clo_recipes.training.loop import TrainJob

    return TrainJob(
        arm="clo", model=ModelSection(base=str(folder)), method=MethodSection(name="clo"),
        adapter=AdapterSection(kind=setup["adapter_kind"], trainable="attention"),
        train=TrainSection(max_steps=args.steps, learning_rate=8e-6, warmup_ratio=0.0, scheduler="constant",
                           global_batch_size=args.global_batch, max_length=args.max_length, save_steps=10**6),
        hardware=HardwareSection(profile="cpu" if args.cpu_tiny else "single-80gb", precision="bf16",
                                 attention=setup["attention"], optimizer="adamw_torch",
                                 quantization=setup["quantization"], micro_batch_size=setup["micro_batch"],
                                 gradient_checkpointing=setup["checkpointing"]),
        rows=rows, work_dir=work, identity={"benchmark": "gpu_check", "adapter": setup["adapter_kind"]},
        reference_file=work / "reference.jsonl", show_progress=False,
    )


def run_clo(folder: Path, rows: list[dict], args, setup: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """The engine's training phase, through `Trainer`'s own steps (the final save is left out:
    16 GB of weights would only time the disk)."""
    from clo_recipes.training.data import PREFERENCE_SEQUENCES
    from clo_recipes.training.loop import Trainer
    from clo_recipes.training.reference import compute_reference, write_reference

    work = Path(tempfile.mkdtemp(prefix=f"clo-{setup['adapter_kind']}-", dir=folder.parent))
    job = clo_job(folder, rows, args, setup, work)
    with DeviceMemory(cuda) as memory:
        trainer = Trainer(job)
        trainer.prepare_data()
        started = time.perf_counter()
        trainer.prepare_model()
        load_seconds = time.perf_counter() - started
        stored = parameter_bytes(trainer.model)  # as loaded and wrapped: NF4 base in uint8, trained weights fp32
        started = time.perf_counter()
        logps = compute_reference(trainer.model, trainer.examples, PREFERENCE_SEQUENCES, pad_id=trainer.pad_id,
                                  device=trainer.accelerator.device, autocast=trainer.accelerator.autocast)
        write_reference(job.reference_file, trainer.examples, logps)
        reference_seconds = time.perf_counter() - started
        trainer.run_phase("clo", None)
    steps = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    timed = steps[1:]  # the first step warms up kernels and the allocator
    tokens, seconds = sum(s["tokens"] for s in timed), sum(s["seconds"] for s in timed)
    result = {"tokens_per_second": tokens / seconds, "timed_steps": len(timed), "timed_tokens": tokens,
              "seconds_per_step": seconds / len(timed), "first_loss": steps[0]["loss"], "last_loss": steps[-1]["loss"],
              "first_preference_loss": steps[0].get("preference"),
              "load_seconds": load_seconds, "reference_seconds": reference_seconds,
              "trainable_parameters": trainer.trainable_count, "total_parameters": trainer.total_count,
              "parameter_bytes_by_dtype": stored, "log_probs": trainer.logps_path.reason,
              "log_probs_streamed": trainer.logps_path.streamed, "memory": memory.record()}
    trainer.accelerator.free_memory()  # the accelerator keeps the model and optimizer otherwise
    del trainer
    shutil.rmtree(work, ignore_errors=True)
    release()
    return result


# ---- driver --------------------------------------------------------------------------------

def peak_tflops(args, env: dict[str, Any]) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    name = env.get("gpu") or ""
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def add_flops(result: dict[str, Any] | None, counts: FlopCounts, peak: float | None) -> None:
    """MFU/HFU from the measured tokens/s and the run's average FLOPs per token."""
    if not result or "tokens_per_second" not in result:
        return
    per_token_model, per_token_hardware = counts.model / counts.tokens, counts.hardware / counts.tokens
    result["model_tflops_per_second"] = result["tokens_per_second"] * per_token_model / 1e12
    result["hardware_tflops_per_second"] = result["tokens_per_second"] * per_token_hardware / 1e12
    result["mfu"] = result["model_tflops_per_second"] / peak if peak else None
    result["hfu"] = result["hardware_tflops_per_second"] / peak if peak else None


def compare_memory(result: dict[str, Any] | None, estimate: dict[str, Any]) -> None:
    if not result or "memory" not in result:
        return
    result["plan_estimate"] = estimate
    result["peak_over_estimate"] = result["memory"]["peak_gib"] / estimate["without_cuda_context_gib"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here (e.g. $OUT/gpu_check.json)")
    parser.add_argument("--cpu-tiny", action="store_true", help="a tiny model on CPU: the whole path in seconds (CI)")
    parser.add_argument("--steps", type=int, help="optimizer steps per trainer (first one untimed; default 6, CPU 3)")
    parser.add_argument("--global-batch", type=int, help="CLO samples per optimizer step (default 8, CPU 4)")
    parser.add_argument("--micro-batch", type=int, default=2, help="CLO samples per forward pass")
    parser.add_argument("--answer-words", type=int, help="answer length in words (default 160, CPU 20)")
    parser.add_argument("--no-checkpointing", action="store_true", help="turn gradient checkpointing off")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s for MFU (default: from the GPU name)")
    parser.add_argument("--budget-s", type=float, default=300, help="skip parts that would end after this many seconds")
    parser.add_argument("--tests-timeout", type=int, default=180)
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: tests,trl_dpo,qlora")
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.cpu_tiny else 6)
    args.answer_words = args.answer_words or (20 if args.cpu_tiny else 160)
    args.global_batch = args.global_batch or (4 if args.cpu_tiny else 8)
    if args.global_batch % args.micro_batch:
        parser.error("--global-batch must be a multiple of --micro-batch")
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    started = time.perf_counter()
    deadline = started + args.budget_s

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_tiny:
        print("no CUDA GPU is visible: run this on the GPU machine, or pass --cpu-tiny to check the script "
              "path on CPU with a tiny model", file=sys.stderr)
        return 2
    report = Report(args.out)
    report.data["mode"] = "cpu-tiny" if args.cpu_tiny else "gpu"
    env = report.data["environment"] = environment(cuda)
    report.save()

    from clo_recipes.hardware.architecture import Architecture
    from clo_recipes.training.loading import resolve_attention

    config = model_config(args.cpu_tiny)
    arch = Architecture.from_config(config)
    wanted = "flash_attention_2" if cuda else "sdpa"
    attention = resolve_attention(wanted)
    if attention != wanted:
        report.note("flash-attn is not importable: attention runs on sdpa (transformers' fused kernel)")
    base = {"attention": attention, "checkpointing": not args.no_checkpointing, "micro_batch": args.micro_batch}
    setups = {"clo": {**base, "adapter_kind": "full", "quantization": "none"},
              "qlora": {**base, "adapter_kind": "qlora", "quantization": "nf4"}}
    report.data["setup"] = {"shape": "tiny Llama (CPU check)" if args.cpu_tiny else "Llama-3-8B (random weights)",
                            "config": config, "steps": args.steps, "global_batch": args.global_batch,
                            "precision": "bf16 autocast, fp32 trained weights", "trainable": "attention (q/k/v/o)",
                            **base}
    peak = peak_tflops(args, env)
    if peak is None:
        report.note("peak FLOP/s unknown for this device: MFU left out (pass --peak-tflops)")
    report.data["peak_tflops"] = peak
    if not cuda:
        report.note("CPU run: peak memory is resident-set growth (libraries, allocator caches), which the GPU "
                    "estimate does not model; the CPU ratio only shows the path works")
    report.data["flop_formula"] = ("model = sum over sequences of (4*N_body + 2*N_trained + 6*N_adapter)*s "
                                   "+ 4*N_head*(answer+1) + 12*L*d*s^2; hardware adds (2*N_body + 2*N_adapter)*s "
                                   "+ 4*L*d*s^2 under gradient checkpointing")

    folder = workspace(args.cpu_tiny, config)
    try:
        built = part(report, "model", deadline, 30,
                     lambda: build_random_llama(folder / "model", config, "cuda" if cuda else "cpu"))
        if built is None or "error" in built:
            return 1
        rows, data = prepare_data(folder / "model", args)
        report.data["data"] = data
        args.max_length = int(1.25 * data["longest"]) + 16  # room for TRL's own rendering: nothing truncated
        sequences = data.pop("_sequences")
        report.save()

        # parts by value: the CLO step, QLoRA, the CUDA tests, the TRL comparison
        clo = part(report, "clo", deadline, 60, lambda: run_clo(folder / "model", rows, args, setups["clo"], cuda))
        counts = count_flops(arch, sequences, adapter_kind="full", lora_rank=16, checkpointing=base["checkpointing"])
        add_flops(clo, counts, peak)
        compare_memory(clo, plan_estimate(config, setups["clo"], data["longest"]))
        report.save()

        reason = ("left out by --skip" if "qlora" in skip else
                  "bitsandbytes is not importable" if importlib.util.find_spec("bitsandbytes") is None else None)
        if reason:
            report.data["qlora"] = {"skipped": reason}
        else:  # the engine's loading path (training/loading.py, scope.py): NF4 on CUDA, bitsandbytes' CPU backend here
            qlora = part(report, "qlora", deadline, 90,
                         lambda: run_clo(folder / "model", rows, args, setups["qlora"], cuda))
            add_flops(qlora, count_flops(arch, sequences, adapter_kind="qlora", lora_rank=16,
                                         checkpointing=base["checkpointing"]), peak)
            compare_memory(qlora, plan_estimate(config, setups["qlora"], data["longest"]))
        report.save()

        if "tests" in skip:
            report.data["tests"] = {"skipped": "left out by --skip"}
        else:  # a child process: this one has released its GPU memory (part() and run_clo empty the cache)
            part(report, "tests", deadline, 20, lambda: run_tests(args.tests_timeout))

        if "trl_dpo" in skip:
            report.data["trl_dpo"] = {"skipped": "left out by --skip"}
        elif importlib.util.find_spec("trl") is None:
            report.data["trl_dpo"] = {"skipped": "trl is not installed"}
        else:
            trl = part(report, "trl_dpo", deadline, 90,
                       lambda: run_trl(folder / "model", rows, args, setups["clo"], cuda))
            add_flops(trl, counts, peak)
        report.save()

        report.data["ratios"] = ratios(report.data)
        report.data["seconds"] = time.perf_counter() - started
        report.save()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"{report.data['setup']['shape']}; {args.steps} steps of {args.global_batch} CLO samples "
          f"(micro-batch {args.micro_batch}); attention {attention}; checkpointing {base['checkpointing']}")
    tests = report.data.get("tests") or {}
    if "passed" in tests:
        print(f"pytest -m cuda: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
              f"{tests['skipped']} skipped ({len(tests['files'])} files)")
    elif tests:
        print(f"pytest -m cuda: {tests.get('skipped') or tests.get('error')}")
    for line in summary(report):
        print(line)
    for key, value in report.data["ratios"].items():
        print(f"{key}: {value:.2f}" if value is not None else f"{key}: -")
    print(f"total {report.data['seconds']:.0f} s" + (f"; results in {args.out}" if args.out else ""))
    failed = [name for name in ("tests", "clo", "trl_dpo", "qlora") if "error" in (report.data.get(name) or {})]
    failed += ["tests"] if tests.get("failures") or tests.get("errors") else []
    if failed:
        print(f"FAILED: {', '.join(sorted(set(failed)))} (details in the JSON)")
    return 1 if failed else 0


def prepare_data(model_folder: Path, args) -> tuple[list[dict], dict[str, Any]]:
    """The rows, and the lengths the engine will train on (rendered with the model's chat template)."""
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.training.chat import ChatRenderer
    from clo_recipes.training.data import PREFERENCE_SEQUENCES, build_examples
    from clo_recipes.training.loading import load_tokenizer

    rows = make_rows(args.steps * args.global_batch, seed=1, answer_words=args.answer_words)
    tokenizer = load_tokenizer(ModelSection(base=str(model_folder)))
    examples = build_examples(rows, ChatRenderer(tokenizer), PREFERENCE_SEQUENCES, 10**6).examples
    sequences = [(len(s), s.answer_length) for e in examples for s in e.sequences.values()]
    lengths = [length for length, _ in sequences]
    return rows, {"samples": len(rows), "sequences": len(sequences), "tokens": sum(lengths),
                  "longest": max(lengths), "mean_length": sum(lengths) / len(lengths), "_sequences": sequences}


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
