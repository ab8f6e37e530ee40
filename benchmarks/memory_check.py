"""The plan-time memory estimate against measured peaks of real CLO steps on CPU.

    python benchmarks/memory_check.py                 # every shape, one fresh process each
    python benchmarks/memory_check.py --shapes llama3-8b-2l/lora --max-length 128

Each shape is a real model's width (hidden size, heads, MLP, full vocabulary) cut to a few
layers and randomly initialised in bf16: Llama-3-8B (128256-token untied head) and
Qwen2.5-3B (151936 tokens, tied embeddings). It trains through the engine's own code
(`training.scope.apply_adapter`, fp32 master weights, accelerate's bf16 autocast, the
streamed `forward_logps`, the CLO loss, AdamW) for two steps of one CLO sample whose four
answers fill `--max-length`, so the estimator's assumptions (answers up to max_length,
optimizer states present) hold.

Measurement: the process's peak resident set (VmHWM in /proc/self/status) above its resident
set before the model was built. tracemalloc only sees Python's allocator, not torch's; torch's
CPU profiler sees torch's tensors but not allocator slack or library buffers (oneDNN); RSS
sees all of it. After the model is built the peak is reset (`echo 5 > /proc/self/clear_refs`)
so random initialisation's fp32 transients do not count. Each shape runs in a fresh
subprocess, one after another (the machine is shared). The estimate is `estimate_memory`'s
total less its CUDA context and fragmentation (what a GPU adds and a CPU process does not).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapes  # noqa: E402  (model shapes from the repo's known configs, shared with gpu_check)
from probes import parameter_bytes  # noqa: E402
from shapes import shape  # noqa: E402

LLAMA3_8B, QWEN25_3B = shape(shapes.LLAMA3_8B), shape(shapes.QWEN25_3B)  # layers set per run below
SHAPES = {  # name -> (config, layers, adapter kind, trainable)
    "llama3-8b-2l/lora": (LLAMA3_8B, 2, "lora", "attention"),
    "llama3-8b-2l/attention": (LLAMA3_8B, 2, "full", "attention"),
    "qwen2.5-3b-2l/lora": (QWEN25_3B, 2, "lora", "attention"),
    "qwen2.5-3b-2l/attention": (QWEN25_3B, 2, "full", "attention"),
}
GIB = 1024**3


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def estimate(name: str, max_length: int) -> dict:
    from clo_recipes.hardware.memory import CUDA_CONTEXT_GB, FRAGMENTATION, estimate_memory

    config, layers, kind, trainable = SHAPES[name]
    result = estimate_memory({**config, "num_hidden_layers": layers}, adapter_kind=kind, trainable=trainable,
                             method_name="clo", max_length=max_length, micro_batch_size=1, precision="bf16",
                             quantization="none", gradient_checkpointing=True, optimizer="adamw_torch",
                             sharding="none", world_size=1, cpu_offload=False, gpu_memory_gb=None, attention="sdpa",
                             lora_rank=16, lora_dropout=0.05)
    parts = {k: v for k, v in result.breakdown.items() if k != "CUDA context & fragmentation"}
    # the fragmentation share is 5% of the rest, rounded parts: recompute the CPU figure exactly
    cpu_total = (result.total_gb - CUDA_CONTEXT_GB) / (1 + FRAGMENTATION)
    return {"estimate_gib": cpu_total, "parts": parts}


def clo_batch(vocab: int, length: int):
    """One CLO sample: four sequences of `length` tokens whose answers start after 8."""
    import torch

    from clo_recipes.methods.logps import IGNORE_INDEX
    from clo_recipes.training.batch import Batch, Chunk

    prompt = 8  # answers fill the rest of max_length, as the estimate assumes
    ids = torch.randint(0, vocab, (4, length))
    labels = ids.clone()
    labels[:, :prompt] = IGNORE_INDEX
    positions = torch.arange(length).expand(4, -1).contiguous()
    chunk = Chunk(torch.arange(4), ids, torch.ones_like(ids), positions, labels, length - prompt + 1)
    names = ("en_en", "en_l", "l_l", "l_en")
    return Batch([chunk], torch.full((4,), length - prompt), names, 1, 4 * length,
                 {n: torch.tensor([-50.0]) for n in names})


def child(name: str, max_length: int) -> dict:
    import torch

    torch.manual_seed(0)
    torch.ones(1) @ torch.ones(1)  # load torch's kernels before the baseline
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoModelForCausalLM

    from clo_recipes.methods.clo import CloLogps, clo_loss
    from clo_recipes.training.batch import forward_logps
    from clo_recipes.training.checkpoint import trainable_parameters
    from clo_recipes.training.optimizers import build_optimizer
    from clo_recipes.training.scope import apply_adapter
    from clo_recipes.training.streaming import LogpsPath, choose_path

    def build(config_dict: dict, layers: int):
        config = AutoConfig.for_model(**{**config_dict, "num_hidden_layers": layers, "attn_implementation": "sdpa"})
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        adapter = SimpleNamespace(kind=kind, trainable=trainable, target_modules=None, r=16, alpha=32, dropout=0.05)
        model, _ = apply_adapter(model, adapter, gradient_checkpointing=True)
        for _, param in trainable_parameters(model):  # fp32 master weights, as training.loop does
            param.data = param.data.float()
        model = accelerator.prepare(model)
        model.train()
        optimizer = build_optimizer(trainable_parameters(accelerator.unwrap_model(model)), "adamw_torch", 1e-5, 0.0)
        return config, model, optimizer

    def step(model, optimizer, batch, path=None) -> float:
        with accelerator.autocast():
            logps = forward_logps(model, batch, path)
            loss = clo_loss(CloLogps(**logps), batch.reference_logps()).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    config_dict, layers, kind, trainable = SHAPES[name]
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    # Warm-up on a tiny model of the same family through the same code (streamed path forced):
    # the libraries, kernels and caches a process loads are its fixed cost, the CPU's
    # counterpart of the CUDA context the estimate adds separately.
    tiny = {**config_dict, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512}
    _, model, optimizer = build(tiny, 1)
    step(model, optimizer, clo_batch(512, 32), LogpsPath(True, "warm-up", 16))
    del model, optimizer
    gc.collect()
    base_kib = status_kib("VmRSS")
    config, model, optimizer = build(config_dict, layers)
    choose_path(model, accelerator.autocast)  # its probe runs at setup under autocast, as in training.loop
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (model built)
    built_kib = status_kib("VmRSS")
    batch = clo_batch(config.vocab_size, max_length)
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        loss = step(model, optimizer, batch)
        seconds.append(time.perf_counter() - started)
    peak_kib = status_kib("VmHWM")
    params = parameter_bytes(model)
    return {"measured_gib": (peak_kib - base_kib) / 2**20, "after_build_gib": (built_kib - base_kib) / 2**20,
            "parameter_gib": {k: round(v / GIB, 3) for k, v in params.items()}, "step_seconds": seconds,
            "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.max_length)))
        return
    rows = []
    for name in args.shapes:
        done = subprocess.run([sys.executable, __file__, "--child", name, "--max-length", str(args.max_length)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"shape": name, **estimate(name, args.max_length), **measured})
        row = rows[-1]
        row["ratio"] = row["estimate_gib"] / row["measured_gib"]
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"\nmax_length {args.max_length} (4 sequences), bf16 weights, 2 layers, AdamW, 2 CLO steps\n")
    print("| shape | estimate GiB (CPU: no CUDA context/fragmentation) | measured peak GiB | estimate / measured |"
          " weights / activations / logits (estimate) |")
    print("|---|---|---|---|---|")
    for row in rows:
        parts = row["parts"]
        print(f"| {row['shape']} | {row['estimate_gib']:.2f} | {row['measured_gib']:.2f} | {row['ratio']:.2f} | "
              f"{parts['weights']:.2f} / {parts['activations']:.2f} / {parts['logits']:.2f} |")


if __name__ == "__main__":
    main()
