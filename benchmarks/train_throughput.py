"""CLO training step throughput: this engine against TRL's DPOTrainer, side by side, on CPU.

    python benchmarks/train_throughput.py            # defaults below; about two minutes on 2 cores

Both sides train the same Llama-shaped model (all weights, fp32, AdamW, lr 1e-5) on the same
CLO samples, each sample as its two cross-lingual preference pairs, with the same global batch
and micro-batch, and reference log-probs precomputed before training (TRL:
`precompute_ref_log_probs=True`, sigmoid loss, no reference model in memory, fp32 like this
engine's CPU profile: TRL's own default would autocast to bf16).

To make the step-0 comparison meaningful the reference log-probs come from a perturbed copy of
the model, and training then starts from the unperturbed model; each side first evaluates its
own preference loss on every pair at the starting weights, and the two must agree to 1e-4.

Throughput is trained tokens (prompt + answer, all four sequences of each sample, no padding)
per second over the steps after the first; memory is the peak resident-set growth while
training. Each side runs in its own process, alternately, `--repeats` times; the best
throughput of each is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from probes import WORDS_EN, WORDS_ES, PeakMemory  # noqa: E402,F401  (shared with the other benchmarks)


# ---- shared setup --------------------------------------------------------------------------

def make_rows(count: int, seed: int) -> list[dict]:
    """CLO quadruples with realistic spread: short queries, answers of 10-90 words, target
    answers a little longer than English ones (as translations usually are)."""
    rng = random.Random(seed)

    def sentence(words, n):
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    rows = []
    for i in range(count):
        q, a = rng.randint(4, 24), rng.randint(10, 90)
        rows.append({"id": f"b{i:04d}", "x_en": sentence(WORDS_EN, q), "y_en": sentence(WORDS_EN, a),
                     "x_l": sentence(WORDS_ES, q + rng.randint(0, 4)),
                     "y_l": sentence(WORDS_ES, int(a * 1.2) + rng.randint(0, 6))})
    return rows


def prepare(folder: Path, args) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from clo_recipes.testing.tiny import build_tiny_llama

    build_tiny_llama(folder / "model", hidden=args.hidden, layers=args.layers, heads=4)
    model = AutoModelForCausalLM.from_pretrained(folder / "model")
    torch.manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    model.save_pretrained(folder / "reference-model")
    (folder / "rows.json").write_text(json.dumps(make_rows(args.samples, seed=1), ensure_ascii=False))


# ---- this engine ---------------------------------------------------------------------------

def run_ours(folder: Path, args) -> dict:
    import torch

    from clo_recipes.methods.clo import CloLogps, preference_loss, preference_pairs
    from clo_recipes.recipe.schema.adapter import AdapterSection
    from clo_recipes.recipe.schema.hardware import HardwareSection
    from clo_recipes.recipe.schema.method import MethodSection
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.recipe.schema.train import TrainSection
    from clo_recipes.training.batch import collate, forward_logps
    from clo_recipes.training.chat import ChatRenderer
    from clo_recipes.training.data import PREFERENCE_SEQUENCES, build_examples
    from clo_recipes.training.loading import load_model, load_tokenizer
    from clo_recipes.training.loop import Trainer, TrainJob
    from clo_recipes.training.reference import attach_reference, compute_reference, write_reference

    rows = json.loads((folder / "rows.json").read_text())
    work = folder / f"ours-{os.getpid()}"
    work.mkdir()
    section = ModelSection(base=str(folder / "model"))
    tokenizer = load_tokenizer(section)
    found = build_examples(rows, ChatRenderer(tokenizer), PREFERENCE_SEQUENCES, args.max_length)
    if found.dropped_too_long:  # TRL would truncate them instead: the two sides must see the same data
        raise SystemExit(f"{found.dropped_too_long} samples exceed --max-length {args.max_length}; raise it")
    examples = found.examples
    reference_model = load_model(ModelSection(base=str(folder / "reference-model")), for_training=True)
    logps = compute_reference(reference_model, examples, PREFERENCE_SEQUENCES, pad_id=tokenizer.pad_token_id,
                              device="cpu")
    del reference_model
    write_reference(work / "reference.jsonl", examples, logps)

    # Step-0 preference loss over every pair, through the same code the training step runs.
    attach_reference(examples, work / "reference.jsonl")
    policy = load_model(section, for_training=True)
    with torch.no_grad():
        losses = []
        for start in range(0, len(examples), 8):
            batch = collate(examples[start:start + 8], PREFERENCE_SEQUENCES, tokenizer.pad_token_id,
                            with_reference=True)
            pairs = preference_pairs(CloLogps(**forward_logps(policy, batch)), batch.reference_logps(), beta=0.1)
            losses.append(preference_loss(pairs) * len(batch.reference["en_en"]))
        step0 = float(sum(losses) / len(examples))
    del policy

    job = TrainJob(
        arm="clo", model=section, method=MethodSection(name="clo"),
        adapter=AdapterSection(kind="full", trainable=args.trainable),
        train=TrainSection(max_steps=args.steps, learning_rate=1e-5, warmup_ratio=0.0, scheduler="constant",
                           global_batch_size=args.global_batch, max_length=args.max_length, save_steps=10**6),
        hardware=HardwareSection(profile="cpu", precision="fp32", attention="sdpa", optimizer="adamw_torch",
                                 micro_batch_size=args.micro_batch, gradient_checkpointing=False),
        rows=rows, work_dir=work, identity={"benchmark": True}, reference_file=work / "reference.jsonl",
        show_progress=False,
    )
    with PeakMemory() as memory:
        Trainer(job).run()
    steps = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()][1:]
    tokens, seconds = sum(s["tokens"] for s in steps), sum(s["seconds"] for s in steps)
    return {"step0_preference": step0, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "train_memory_mb": memory.growth_mb, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- TRL -----------------------------------------------------------------------------------

def run_trl(folder: Path, args) -> dict:
    import torch
    from datasets import Dataset
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = json.loads((folder / "rows.json").read_text())
    pairs = []
    for row in rows:  # the two cross-lingual pairs of every sample
        for query, chosen, rejected in ((row["x_en"], row["y_en"], row["y_l"]), (row["x_l"], row["y_l"], row["y_en"])):
            pairs.append({"prompt": [{"role": "user", "content": query}],
                          "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}]})
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    # Reference log-probs from the perturbed copy, then training starts from the real model.
    model = AutoModelForCausalLM.from_pretrained(folder / "reference-model")
    micro_rows = 2 * args.micro_batch
    config = DPOConfig(
        output_dir=str(folder / f"trl-{os.getpid()}"), per_device_train_batch_size=micro_rows,
        gradient_accumulation_steps=args.global_batch // args.micro_batch, max_steps=args.steps, learning_rate=1e-5,
        lr_scheduler_type="constant", warmup_steps=0, beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=True,
        precompute_ref_batch_size=micro_rows, max_length=args.max_length, report_to="none", use_cpu=True,
        bf16=False,  # TRL's default autocasts to bf16 even on CPU; both sides run fp32 here
        save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=42,
        gradient_checkpointing=False,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)
    state = load_file(str(folder / "model" / "model.safetensors"))
    model.load_state_dict(state, strict=False)
    model.tie_weights()

    dataset = trainer.train_dataset
    with torch.no_grad():
        total = 0.0
        for start in range(0, len(dataset), micro_rows):
            features = [dataset[i] for i in range(start, min(start + micro_rows, len(dataset)))]
            total += trainer._compute_loss(trainer.model, trainer.data_collator(features), False).item() * len(features)
        step0 = total / len(dataset)
    trainer._metrics = {"train": type(trainer._metrics["train"])(list), "eval": type(trainer._metrics["eval"])(list)}
    trainer._total_train_tokens = 0

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begun, self.seconds, self.tokens = 0.0, [], []

        def on_step_begin(self, *_, **__):
            self.begun = time.perf_counter()
            self.before = trainer._total_train_tokens

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self.begun)
            self.tokens.append(trainer._total_train_tokens - self.before)

    clock = StepClock()
    trainer.add_callback(clock)
    with PeakMemory() as memory:
        trainer.train()
    tokens, seconds = sum(clock.tokens[1:]), sum(clock.seconds[1:])
    return {"step0_preference": step0, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "train_memory_mb": memory.growth_mb, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- driver --------------------------------------------------------------------------------

def child(side: str, folder: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", side, "--folder", str(folder)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "folder")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=640, help="above every sample: nothing dropped or truncated")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--trainable", default="all", choices=["all", "attention"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (1: least noise on a shared CPU)")
    parser.add_argument("--child", choices=["ours", "trl"])
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        runner = run_ours if args.child == "ours" else run_trl
        print(json.dumps(runner(args.folder, args)))
        return

    with tempfile.TemporaryDirectory(prefix="clo-bench-") as tmp:
        folder = Path(tmp)
        prepare(folder, args)
        results: dict[str, list[dict]] = {"ours": [], "trl": []}
        for _ in range(args.repeats):
            for side in ("ours", "trl"):
                results[side].append(child(side, folder, args))
    best = {side: max(runs, key=lambda r: r["tokens_per_second"]) for side, runs in results.items()}
    ours, trl = best["ours"], best["trl"]
    print(f"model: Llama-shaped, hidden {args.hidden}, {args.layers} layers; {args.samples} CLO samples; "
          f"global batch {args.global_batch}, micro-batch {args.micro_batch}; {args.steps} steps; "
          f"trainable: {args.trainable}; {args.threads} torch thread(s) per side")
    print(f"{'':22}{'this engine':>14}{'TRL DPOTrainer':>16}")
    print(f"{'step-0 preference':22}{ours['step0_preference']:>14.6f}{trl['step0_preference']:>16.6f}")
    print(f"{'tokens/s (best)':22}{ours['tokens_per_second']:>14.0f}{trl['tokens_per_second']:>16.0f}")
    every = {side: ", ".join(f"{r['tokens_per_second']:.0f}" for r in runs) for side, runs in results.items()}
    print(f"{'tokens/s (all runs)':22}{every['ours']:>14}{every['trl']:>16}")
    print(f"{'train memory (MiB)':22}{ours['train_memory_mb']:>14.0f}{trl['train_memory_mb']:>16.0f}")
    print(f"{'peak RSS (MiB)':22}{ours['peak_rss_mb']:>14.0f}{trl['peak_rss_mb']:>16.0f}")
    gap = abs(ours["step0_preference"] - trl["step0_preference"])
    ratio = ours["tokens_per_second"] / trl["tokens_per_second"]
    print(f"step-0 preference losses agree within 1e-4: {'yes' if gap < 1e-4 else 'NO'} (|diff| = {gap:.2e})")
    print(f"throughput ratio (this engine / TRL): {ratio:.2f}x  (target >= 1.2x)")


if __name__ == "__main__":
    main()
