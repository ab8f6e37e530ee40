"""The plan-time memory estimate against measured peaks of real CLO steps on CPU.

    python benchmarks/memory_check.py                 # every shape, one fresh process each
    python benchmarks/memory_check.py --shapes llama3-8b-2l/lora --max-length 128

Each shape is a real model's width (hidden size, heads, MLP, full vocabulary) cut to a few
layers and randomly initialised in bf16: Llama-3-8B (128256-token untied head) and
Qwen2.5-3B (151936 tokens, tied embeddings). It trains through the engine's own code
(`training.scope.apply_adapter`, fp32 master weights, accelerate's bf16 autocast, the
streamed `forward_logps`, the CLO loss, AdamW) for two steps of one CLO sample whose four
answers fill `--max-length`, so the estimator's assumptions (answers up to max_length,
optimizer states present) hold. The `/qlora` shapes load the random bf16 weights (saved once
by a separate process under `--models`) through the engine's own loader
(`training.loading.load_model`, bitsandbytes NF4 with double-quantised scales, on its CPU
backend) and train LoRA adapters on the 4-bit attention projections.

Measurement: the process's peak resident set (VmHWM in /proc/self/status) above its resident
set before the model was built. tracemalloc only sees Python's allocator, not torch's; torch's
CPU profiler sees torch's tensors but not allocator slack or library buffers (oneDNN); RSS
sees all of it. After the model is built the peak is reset (`echo 5 > /proc/self/clear_refs`)
so random initialisation's fp32 transients (and 4-bit quantisation's, at load) do not count;
it is reset again around each phase of each step (forward, backward, optimizer) to show
where the peak falls. Each shape runs in a fresh subprocess, one after another (the machine
is shared), with glibc's mmap threshold fixed at 64 KiB so freed tensors leave the resident set
(`run_shape`), and a 4-bit model's unquantized weights copied out of the checkpoint's file
mapping (`own_memory`). The estimate is `estimate_memory`'s total less its CUDA context and
fragmentation (what a GPU adds and a CPU process does not). docs/performance.md has the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapes  # noqa: E402  (model shapes from the repo's known configs, shared with gpu_check)
from probes import load_average, parameter_bytes, reset_peak_rss, status_kib  # noqa: E402
from shapes import shape  # noqa: E402

LLAMA3_8B, QWEN25_3B = shape(shapes.LLAMA3_8B), shape(shapes.QWEN25_3B)  # layers set per run below
SHAPES = {  # name -> (config, layers, adapter kind, trainable)
    "llama3-8b-2l/lora": (LLAMA3_8B, 2, "lora", "attention"),
    "llama3-8b-2l/attention": (LLAMA3_8B, 2, "full", "attention"),
    "qwen2.5-3b-2l/lora": (QWEN25_3B, 2, "lora", "attention"),
    "qwen2.5-3b-2l/attention": (QWEN25_3B, 2, "full", "attention"),
    "llama3-8b-2l/qlora": (LLAMA3_8B, 2, "qlora", "attention"),
    "qwen2.5-3b-2l/qlora": (QWEN25_3B, 2, "qlora", "attention"),
}
GIB = 1024**3


def estimate(name: str, max_length: int) -> dict:
    from clo_recipes.hardware.memory import CUDA_CONTEXT_GB, FRAGMENTATION, estimate_memory

    config, layers, kind, trainable = SHAPES[name]
    result = estimate_memory({**config, "num_hidden_layers": layers}, adapter_kind=kind, trainable=trainable,
                             method_name="clo", max_length=max_length, micro_batch_size=1, precision="bf16",
                             quantization="nf4" if kind == "qlora" else "none", gradient_checkpointing=True,
                             optimizer="adamw_torch", sharding="none", world_size=1, cpu_offload=False, gpu_memory_gb=None, attention="sdpa",
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


def save_bf16(config_dict: dict, layers: int, folder: Path) -> None:
    """Random bf16 weights of the shape, saved like a hub checkpoint (a process of its own, so
    the measuring one never held them: what it frees is not always given back to the OS)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(**{**config_dict, "num_hidden_layers": layers})
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)


def own_memory(model) -> None:
    """Copy every tensor the loader left inside the checkpoint's file mapping into memory of
    the process's own, and let the mapping go. safetensors maps the file copy-on-write and
    the unquantized weights (embeddings, head, norms) are views of it: their pages count in
    the resident set only once touched (the input embedding's few looked-up rows), while the
    bf16 pages of the linears bitsandbytes read to quantize stay resident (file-backed,
    reclaimable page cache). Measured on the Llama shape: 0.81 GiB of linears' pages
    resident, most of the 0.98 GiB input embedding not. A GPU holds every weight and none
    of the file."""
    import torch

    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype != torch.uint8:  # the 4-bit codes were made by quantizing: already our own
            tensor.data = tensor.data.clone()
    gc.collect()


def mapped_kib(folder: Path) -> int:
    """Resident KiB of the mappings of files under `folder` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header: address range ... path
            inside = fields[-1].startswith(str(folder))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def child(name: str, max_length: int, models: Path) -> dict:
    import torch

    torch.manual_seed(0)
    torch.ones(1) @ torch.ones(1)  # load torch's kernels before the baseline
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoModelForCausalLM

    from clo_recipes.methods.clo import CloLogps, clo_loss
    from clo_recipes.training.batch import forward_logps
    from clo_recipes.training.checkpoint import trainable_parameters
    from clo_recipes.training.loading import load_model
    from clo_recipes.training.optimizers import build_optimizer
    from clo_recipes.training.scope import apply_adapter
    from clo_recipes.training.streaming import LogpsPath, choose_path, innermost

    def build(config_dict: dict, layers: int, folder: Path):
        if kind == "qlora":  # the engine's loader: bitsandbytes quantises the bf16 checkpoint while loading
            section = SimpleNamespace(base=str(folder), gguf_file=None, revision=None, trust_remote_code=False)
            model = load_model(section, precision="bf16", attention="sdpa", quantization="nf4", for_training=True)
            own_memory(model)
        else:
            config = AutoConfig.for_model(**{**config_dict, "num_hidden_layers": layers, "attn_implementation": "sdpa"})
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        adapter = SimpleNamespace(kind=kind, trainable=trainable, target_modules=None, r=16, alpha=32, dropout=0.05)
        model, _ = apply_adapter(model, adapter, gradient_checkpointing=True)
        for _, param in trainable_parameters(model):  # fp32 master weights, as training.loop does
            param.data = param.data.float()
        choose_path(model, accelerator.autocast)  # its probe runs at setup under autocast, as in training.loop
        model = accelerator.prepare(model)
        model.train()
        optimizer = build_optimizer(trainable_parameters(accelerator.unwrap_model(model)), "adamw_torch", 1e-5, 0.0)
        return innermost(model).config, model, optimizer

    def phase(record: dict, key: str) -> None:
        record[key] = round((status_kib("VmHWM") - base_kib) / 2**20, 3)
        reset_peak_rss()

    def step(model, optimizer, batch, path=None, record: dict | None = None) -> float:
        record = {} if record is None else record
        with accelerator.autocast():
            logps = forward_logps(model, batch, path)
            loss = clo_loss(CloLogps(**logps), batch.reference_logps()).loss
        phase(record, "forward")
        accelerator.backward(loss)
        phase(record, "backward")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phase(record, "optimizer")
        return loss.item()

    config_dict, layers, kind, trainable = SHAPES[name]
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    # Warm-up on a tiny model of the same family through the same code (streamed path forced,
    # 4-bit loading for the qlora shapes): the libraries, kernels and caches a process loads are
    # its fixed cost, the CPU's counterpart of the CUDA context the estimate adds separately.
    tiny = {**config_dict, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512}
    base_kib = status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as folder:
        if kind == "qlora":
            save_bf16(tiny, 1, Path(folder))
        _, model, optimizer = build(tiny, 1, Path(folder))
        step(model, optimizer, clo_batch(512, 32), LogpsPath(True, "warm-up", 16))
    del model, optimizer
    gc.collect()
    base_kib = status_kib("VmRSS")
    config, model, optimizer = build(config_dict, layers, models / name.replace("/", "_"))
    path = choose_path(model)  # cached on the model by build()
    reset_peak_rss()  # model built
    built_kib = status_kib("VmRSS")
    batch = clo_batch(config.vocab_size, max_length)
    seconds, phases = [], []
    for _ in range(2):
        started = time.perf_counter()
        phases.append({})
        loss = step(model, optimizer, batch, record=phases[-1])
        seconds.append(time.perf_counter() - started)
    params = parameter_bytes(model)
    return {"measured_gib": max(max(record.values()) for record in phases),
            "after_build_gib": (built_kib - base_kib) / 2**20, "phases_gib": phases, "logps_path": path.reason,
            "parameter_gib": {k: round(v / GIB, 3) for k, v in params.items()}, "step_seconds": seconds,
            "checkpoint_mapped_gib": mapped_kib(models) / 2**20, "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--models", type=Path, default=None,
                        help="folder for the qlora shapes' bf16 checkpoints (kept; default: a temporary one)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's adaptive mmap threshold on (freed transients stay resident)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.save:
        config, layers, _, _ = SHAPES[args.save]
        save_bf16(config, layers, args.models / args.save.replace("/", "_"))
        return
    if args.child:
        print(json.dumps(child(args.child, args.max_length, args.models)))
        return
    with tempfile.TemporaryDirectory(dir=args.models) as scratch:
        models = args.models or Path(scratch)
        rows = [run_shape(name, args.max_length, models, args.default_malloc) for name in args.shapes]
    print(f"\nmax_length {args.max_length} (4 sequences), 2 layers, AdamW, 2 CLO steps; "
          "bf16 weights, or NF4 linears under qlora\n")
    print("| shape | estimate GiB (CPU: no CUDA context/fragmentation) | measured peak GiB | estimate / measured |"
          " weights / activations / logits (estimate) | load average before / after |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if row is None:
            continue
        parts = row["parts"]
        print(f"| {row['shape']} | {row['estimate_gib']:.2f} | {row['measured_gib']:.2f} | {row['ratio']:.2f} | "
              f"{parts['weights']:.2f} / {parts['activations']:.2f} / {parts['logits']:.2f} | "
              f"{row['load_before']} / {row['load_after']} |")


def run_shape(name: str, max_length: int, models: Path, default_malloc: bool = False) -> dict | None:
    """One shape in a fresh process (after saving its checkpoint in another, for qlora)."""
    load_before = load_average()
    if SHAPES[name][2] == "qlora" and not (models / name.replace("/", "_") / "config.json").exists():
        subprocess.run([sys.executable, __file__, "--save", name, "--models", str(models)], check=True)
    # glibc keeps freed blocks below its mmap threshold (adaptive, up to 32 MiB) resident for
    # reuse, so a default process's resident set holds transients long gone (measured: Qwen2.5-3B
    # LoRA 1.17 GiB by default, 1.05 GiB with the threshold fixed at 64 KiB); with it, freed
    # tensors return to the OS and the resident peak follows live memory (a GPU's counterpart,
    # its caching allocator's slack, is the estimate's 5 % fragmentation, left out of the CPU figure).
    env = os.environ if default_malloc else {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    done = subprocess.run([sys.executable, __file__, "--child", name, "--max-length", str(max_length),
                           "--models", str(models)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"shape": name, **estimate(name, max_length), **measured, "load_before": load_before,
           "load_after": load_average()}
    row["ratio"] = row["estimate_gib"] / row["measured_gib"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


if __name__ == "__main__":
    main()
