"""Model shapes and the FLOP formula the benchmarks share (gpu_check, memory_check).

Shapes come from `clo_recipes/hardware/known_models.py` (copied from the public config.json
files), so a benchmark builds a randomly initialised model of the right shape with nothing
to download: the GPU machine has no network, and only the working tree travels to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA3_8B = "meta-llama/meta-llama-3-8b"
QWEN25_3B = "qwen/qwen2.5-3b"
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# What the estimator does not read but building the model does (same config.json files).
_BUILD_EXTRAS = {LLAMA3_8B: {"head_dim": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0},
                 QWEN25_3B: {"head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0}}
# The CPU check's tiny Llama; its vocabulary is at the engine's streaming threshold (32,768),
# so the CPU run goes through the streamed log-prob path, as the 8B shape (128,256) does.
TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32768, "tie_word_embeddings": False}


def shape(name: str, **overrides: Any) -> dict[str, Any]:
    """A known model's config (by hub name, any case), with `overrides` (e.g. fewer layers)."""
    from clo_recipes.hardware.known_models import KNOWN_MODELS

    key = name.lower()
    return {**KNOWN_MODELS[key], **_BUILD_EXTRAS.get(key, {}), **overrides}


def build_random_llama(folder: Path, config: dict[str, Any], device: str) -> dict[str, Any]:
    """Random bf16 weights of `config`'s (Llama) shape and the tiny test tokenizer (its ids fit
    any vocabulary), saved like a hub checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from clo_recipes.testing.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    llama = LlamaConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"], num_key_value_heads=config["num_key_value_heads"],
        tie_word_embeddings=config["tie_word_embeddings"], max_position_embeddings=8192,
        rope_theta=config.get("rope_theta", 500000.0), rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # initialising 8B weights on the GPU takes seconds, on CPU minutes
        model = LlamaForCausalLM(llama).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    count = sum(p.numel() for p in model.parameters())
    del model
    return {"parameters": count, "build_seconds": time.perf_counter() - started}


# ---- the FLOP formula (documented in benchmarks/gpu_check.py's header) ----------------------

@dataclass(frozen=True)
class FlopCounts:
    model: float
    hardware: float
    tokens: int


def count_flops(arch: Any, sequences: list[tuple[int, int]], *, adapter_kind: str, lora_rank: int,
                checkpointing: bool) -> FlopCounts:
    """Model and hardware FLOPs of one forward + backward over `sequences` ((length, answer
    length) pairs) for attention-only training."""
    body = arch.linear_params
    head = arch.vocab * arch.hidden
    if adapter_kind in ("lora", "qlora"):
        trained, adapter = 0, arch.lora_params(list(ATTENTION_MODULES), lora_rank)
    else:
        trained, adapter = arch.attention_params, 0
    width = arch.q_dim  # attention scores run at the query width
    model = hardware = 0.0
    tokens = 0
    for length, answer in sequences:
        linear = (4 * body + 2 * trained + 6 * adapter) * length + 4 * head * (answer + 1)
        scores = 12 * arch.layers * width * length**2
        model += linear + scores
        hardware += linear + scores
        if checkpointing:
            hardware += (2 * body + 2 * adapter) * length + 4 * arch.layers * width * length**2
        tokens += length
    return FlopCounts(model, hardware, tokens)
