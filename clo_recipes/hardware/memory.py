"""Peak GPU memory of a training run, estimated at plan time from the model's config alone.

DPO-style training is the most common out-of-memory report in fine-tuning tools, because each
sample is several sequences. Here one CLO sample is four (the English and the target query,
each with its chosen and rejected answer); the reference log-probs are precomputed by the
`reference` stage, so no second model is held.

What is counted, per GPU (bytes per parameter or per token; c = 2 for bf16/fp16, 4 for fp32):

- weights: frozen weights in the compute dtype (4-bit NF4 linears under QLoRA, with the
  double-quantised scales the training stage loads); weights that train are kept in fp32 (at
  lr 8e-6 a bf16 weight would round most updates away); LoRA adapters are fp32 (PEFT's default);
  under bf16/fp16 autocast also the half-precision copy of each fp32 weight it caches.
- gradients: fp32, one per trainable parameter; optimizer: AdamW 8 B (two fp32 moments),
  8-bit AdamW 2 B. Sharding divides these by the world size (FSDP full shard / ZeRO-3: all
  three; ZeRO-2: gradients and optimizer); FSDP/ZeRO-3 add the layers gathered for compute;
  CPU offload moves the shards off the GPU; plain data parallelism adds gradient buckets.
- activations: what autograd keeps per token and layer of a Llama-style block (fp32 RMSNorm
  inputs, q/k/v/attention output, gate/up/activation outputs, plus the inputs of whatever
  trains). With gradient checkpointing: one hidden state per layer, and backward then visits
  the logits first and one recomputed layer at a time, so the peak is the larger of the two
  working sets (a recomputed layer counts twice: its activations and their gradients; under
  QLoRA plus the largest 4-bit linear dequantized to the compute dtype for its product).
  `tests/test_hardware_memory.py` checks the per-layer bytes against what autograd keeps.
- logits: what the training stage's answer log-probs keep over every position of the micro
  batch (answers can fill `train.max_length`). Streamed (vocabularies from
  `logps_plan.STREAM_MIN_VOCAB`, methods/streamed.py): per answer token its gradient to the
  hidden state (frozen head) or its hidden state (head that trains, recomputed in backward),
  plus one chunk's logits working set. Full logits (small vocabularies, methods/logps.py): the
  logits, the answer rows gathered from them, their fp32 copy and the fp32 log-softmax. Tests
  measure both with the PyTorch profiler.
- CUDA context and allocator fragmentation: a fixed 0.75 GiB and 5 %.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .architecture import Architecture
from .logps_plan import chunk_tokens, describe, streams
from .model_config import read_model_config

GIB = 1024**3
CUDA_CONTEXT_GB = 0.75
FRAGMENTATION = 0.05
# 4-bit codes, one 8-bit scale per 64-weight block, one fp32 scale per 256 of those (double quant)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
MASTER_BYTES = 4  # trainable weights, their gradients and LoRA adapters are fp32
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2}
DROPOUT_MASK_BYTES = 1  # CUDA stores dropout masks as bool

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")

__all__ = ["MemoryEstimate", "TrainingSetup", "check_fit", "estimate_memory", "read_model_config",
           "sequences_per_sample"]


def sequences_per_sample(method_name: str, sft_languages: str = "both") -> int:
    """Sequences one training sample puts through the model in one step. CLO (and the DPO
    phase of sft+dpo): two preference pairs sharing two answers = 2 chosen + 2 rejected.
    SFT: one target and/or one English (query, answer)."""
    if method_name in ("clo", "sft+dpo"):
        return 4
    return 2 if sft_languages == "both" else 1


@dataclass(frozen=True)
class TrainingSetup:
    adapter_kind: str = "full"  # full | lora | qlora
    trainable: str = "attention"  # attention | all
    method_name: str = "clo"
    max_length: int = 2048
    micro_batch_size: int = 1
    precision: str = "bf16"
    quantization: str = "none"
    gradient_checkpointing: bool = True
    optimizer: str = "adamw_torch"
    sharding: str = "none"
    world_size: int = 1
    cpu_offload: bool = False
    attention: str = "sdpa"
    lora_rank: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None
    sft_languages: str = "both"

    @property
    def compute_bytes(self) -> int:
        return {"fp64": 8, "fp32": 4}.get(self.precision, 2)

    @property
    def lora(self) -> bool:
        return self.adapter_kind in ("lora", "qlora")

    @property
    def quantized(self) -> bool:
        return self.quantization == "nf4" or self.adapter_kind == "qlora"

    @property
    def tokens(self) -> int:
        """Tokens in one micro batch (padded to the longest; the peak comes with the longest)."""
        return self.micro_batch_size * sequences_per_sample(self.method_name, self.sft_languages) * self.max_length

    def modules(self) -> tuple[str, ...]:
        """Linear layers that train (LoRA targets, or fully trained layers)."""
        if self.target_modules:
            known = tuple(m for m in self.target_modules if m in ATTENTION_MODULES + MLP_MODULES)
            if known:
                return known
        return ATTENTION_MODULES + (MLP_MODULES if self.trainable == "all" else ())

    @property
    def trains_everything(self) -> bool:
        """`full` + `all` without an explicit module list: every parameter trains."""
        return self.adapter_kind == "full" and self.trainable == "all" and not self.target_modules

    def replace(self, **changes: Any) -> "TrainingSetup":
        return dataclasses.replace(self, **changes)


@dataclass
class MemoryEstimate:
    total_gb: float  # GiB per GPU
    breakdown: dict[str, float]  # contributor -> GiB
    fits: bool
    largest: str
    suggestion: str | None
    gpu_memory_gb: float | None = None
    total_params: int = 0
    trainable_params: int = 0
    tokens_per_micro_batch: int = 0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- parameters
def _module_params(arch: Architecture, modules: tuple[str, ...]) -> int:
    shapes = {**arch.attention_linears(), **arch.mlp_linears()}
    weights = sum(shapes[m][0] * shapes[m][1] for m in modules if m in shapes)
    bias = (arch.q_dim * ("q_proj" in modules) + arch.kv_dim * (("k_proj" in modules) + ("v_proj" in modules))
            if arch.qkv_bias else 0)
    return arch.layers * (weights + bias)


def parameter_split(arch: Architecture, setup: TrainingSetup) -> dict[str, int]:
    """Parameters by how they are stored: trained in place, frozen linear (quantizable),
    frozen other (embeddings, norms), and LoRA adapter."""
    if setup.lora:
        trained, lora = 0, arch.lora_params(list(setup.modules()), setup.lora_rank)
    elif setup.trains_everything:
        trained, lora = arch.total_params, 0
    else:
        trained, lora = _module_params(arch, setup.modules()), 0
    frozen_linear = max(arch.linear_params - trained, 0)
    frozen_other = arch.total_params - trained - frozen_linear
    return {"trained": trained, "frozen_linear": frozen_linear, "frozen_other": frozen_other, "lora": lora}


# --------------------------------------------------------------------------- activations
def layer_activation_bytes(arch: Architecture, setup: TrainingSetup) -> float:
    """Bytes autograd keeps per token for one decoder layer."""
    h, c, width = arch.hidden, setup.compute_bytes, arch.mlp_width_per_token
    kept = 2 * 4 * h  # both RMSNorms keep their input in fp32
    kept += (2 * arch.q_dim + 2 * arch.kv_dim) * c + arch.heads * 4  # q, k, v, output, logsumexp
    if setup.attention == "eager":  # the (heads x seq) probability matrix, fp32 softmax + cast + dropout mask
        kept += arch.heads * setup.max_length * (4 + (c if c < 4 else 1) + 1)
    kept += 3 * width * c  # gate and up outputs, activation output
    modules = setup.modules()
    if setup.lora:
        shapes = {**arch.attention_linears(), **arch.mlp_linears()}
        for module in modules:
            if module in shapes:
                features = shapes[module][0]  # input cast to the fp32 adapter, dropout mask, A's output
                kept += features * MASTER_BYTES + (features * DROPOUT_MASK_BYTES if setup.lora_dropout else 0)
                kept += setup.lora_rank * MASTER_BYTES
    else:  # a weight that trains needs its layer's input
        if setup.trains_everything or {"q_proj", "k_proj", "v_proj"} & set(modules):
            kept += h * c
        if setup.trains_everything or {"gate_proj", "up_proj"} & set(modules):
            kept += h * c
        if setup.trains_everything or "down_proj" in modules:
            kept += width * c
        if setup.trains_everything:  # norm weights train: their normalised input too
            kept += 2 * h * c
    return kept


def activation_bytes(arch: Architecture, setup: TrainingSetup) -> float:
    """Activation bytes at the step's peak beyond the logits' working set (which
    `logits_bytes` counts): all layers without checkpointing; with it, the checkpointed hidden
    states plus whatever a recomputed layer's working set needs beyond the logits'."""
    tokens, c = setup.tokens, setup.compute_bytes
    per_layer = layer_activation_bytes(arch, setup)
    final = 4 * arch.hidden + (arch.hidden * c if setup.trains_everything else 0)  # final norm (+ head input)
    if not setup.gradient_checkpointing:  # every layer's activations are alive when backward starts
        return tokens * (arch.layers * per_layer + final)
    # a recomputed layer's activations and their gradients (and a 4-bit linear's dequantized weight)
    layer_phase = tokens * 2 * per_layer + dequantized_bytes(arch, setup)
    return tokens * (arch.layers * arch.hidden * c + final) + max(0.0, layer_phase - head_working_set(arch, setup))


def dequantized_bytes(arch: Architecture, setup: TrainingSetup) -> float:
    """QLoRA: bitsandbytes multiplies by a 4-bit weight by dequantizing it to the compute dtype
    (in the forward, and again for the input gradient in backward), its block scales decoded to
    fp32 twice on the way (8 B per 64 weights); one linear at a time, so the largest counts.
    `tests/test_hardware_memory.py` checks it with the PyTorch profiler on bitsandbytes' CPU backend."""
    if not setup.quantized:
        return 0.0
    largest = max(fan_in * fan_out for fan_in, fan_out in {**arch.attention_linears(), **arch.mlp_linears()}.values())
    return largest * (setup.compute_bytes + 8 / 64)


def head_kept_bytes(arch: Architecture, setup: TrainingSetup) -> float:
    """Streamed path: what stays from the head's forward until backward, per answer token: the
    gradient to its hidden state (frozen head) or the hidden state itself (a head that trains is
    recomputed), its log-prob (fp32) and its row index (int64). Full path: nothing beyond its
    working set."""
    if not streams(arch.vocab):
        return 0.0
    return setup.tokens * (arch.hidden * setup.compute_bytes + 4 + 8)


def head_working_set(arch: Architecture, setup: TrainingSetup) -> float:
    """Peak transient of the answer log-probs. Streamed, one chunk of `chunk_tokens` rows: a
    frozen head keeps the chunk's fp32 logits (softmax and its gradient are built in place) plus,
    in half precision, the head's output and the gradient cast back; a head that trains is
    recomputed under autograd in backward (16 B per logit, profiler). Full: every answer row."""
    c = setup.compute_bytes
    if streams(arch.vocab):
        rows = min(chunk_tokens(arch.vocab, setup.tokens), setup.tokens)
        per_logit = 16 if setup.trains_everything else 4 + (2 * c if c < 4 else 0)
        return rows * arch.vocab * per_logit
    return setup.tokens * arch.vocab * (c + c + (4 if c < 4 else 0) + 4)


def logits_bytes(arch: Architecture, setup: TrainingSetup) -> float:
    """The answer log-probs' peak: what the streamed path keeps plus its working set (or the
    full logits path's working set)."""
    return head_kept_bytes(arch, setup) + head_working_set(arch, setup)


# --------------------------------------------------------------------------- the estimate
def breakdown_bytes(arch: Architecture, setup: TrainingSetup) -> dict[str, float]:
    c, world = setup.compute_bytes, max(setup.world_size, 1)
    split = parameter_split(arch, setup)
    trainable = split["trained"] + split["lora"]
    weights = (split["frozen_linear"] * (NF4_BYTES if setup.quantized else c) + split["frozen_other"] * c
               + (split["trained"] + split["lora"]) * MASTER_BYTES)
    if c < 4:  # autocast caches a half-precision copy of every fp32 weight it casts, for the whole step
        weights += (split["trained"] + split["lora"]) * c
    gradients = trainable * MASTER_BYTES
    optimizer = trainable * OPTIMIZER_BYTES[setup.optimizer]
    parts: dict[str, float] = {}
    sharded = setup.sharding in ("fsdp", "deepspeed-zero3") and world > 1
    if sharded:
        offloaded = setup.cpu_offload
        parts["weights"] = 0.0 if offloaded else weights / world
        parts["gradients"] = 0.0 if offloaded else gradients / world
        parts["optimizer states"] = 0.0 if offloaded else optimizer / world
        # the layer being computed and the one prefetched, plus the root unit (embeddings, head)
        parts["gathered layers"] = (2 * arch.layer_params + arch.embedding_params) * c
    elif setup.sharding == "deepspeed-zero2" and world > 1:
        parts["weights"] = weights
        parts["gradients"] = 0.0 if setup.cpu_offload else gradients / world
        parts["optimizer states"] = 0.0 if setup.cpu_offload else optimizer / world
    else:
        parts["weights"], parts["gradients"], parts["optimizer states"] = weights, gradients, optimizer
        if world > 1:  # DDP keeps a second copy of the gradients in its all-reduce buckets
            parts["gradient buckets"] = gradients
    parts["activations"] = activation_bytes(arch, setup)
    parts["logits"] = logits_bytes(arch, setup)
    parts["CUDA context & fragmentation"] = CUDA_CONTEXT_GB * GIB + FRAGMENTATION * sum(parts.values())
    return parts


def _estimate(arch: Architecture, setup: TrainingSetup, gpu_memory_gb: float | None) -> MemoryEstimate:
    parts = breakdown_bytes(arch, setup)
    total = sum(parts.values()) / GIB
    contributors = {k: v for k, v in parts.items() if k != "CUDA context & fragmentation"}
    split = parameter_split(arch, setup)
    return MemoryEstimate(
        total_gb=total,
        breakdown={k: round(v / GIB, 2) for k, v in parts.items()},
        fits=gpu_memory_gb is None or total <= gpu_memory_gb,
        largest=max(contributors, key=contributors.get),
        suggestion=None,
        gpu_memory_gb=gpu_memory_gb,
        total_params=arch.total_params,
        trainable_params=split["trained"] + split["lora"],
        tokens_per_micro_batch=setup.tokens,
        notes=[describe(arch.vocab, setup.tokens)],
    )


def _ladder(setup: TrainingSetup) -> list[tuple[str, dict[str, Any]]]:
    """Changes that lower memory, the ones that keep the method closest to the paper first."""
    steps: list[tuple[str, dict[str, Any]]] = []
    if not setup.gradient_checkpointing:
        steps.append(("hardware.gradient_checkpointing: true", {"gradient_checkpointing": True}))
    if setup.micro_batch_size > 1:
        steps.append(("hardware.micro_batch_size: 1", {"micro_batch_size": 1}))
    if setup.optimizer == "adamw_torch":
        steps.append(("hardware.optimizer: paged_adamw_8bit", {"optimizer": "paged_adamw_8bit"}))
    if setup.world_size > 1 and setup.sharding in ("none", "deepspeed-zero2"):
        steps.append(("hardware.sharding: fsdp", {"sharding": "fsdp"}))
    if setup.world_size > 1 and not setup.cpu_offload:
        steps.append(("hardware.cpu_offload: true", {"cpu_offload": True}))
    if setup.adapter_kind == "full":
        steps.append(("adapter.kind: lora", {"adapter_kind": "lora"}))
    if setup.adapter_kind != "qlora":
        steps.append(("adapter.kind: qlora", {"adapter_kind": "qlora", "quantization": "nf4"}))
    if setup.max_length > 1024:
        steps.append((f"train.max_length: {max(setup.max_length // 2, 1024)}",
                      {"max_length": max(setup.max_length // 2, 1024)}))
    return steps


def suggest(arch: Architecture, setup: TrainingSetup, gpu_memory_gb: float) -> str:
    """The smallest prefix of the ladder that fits, or what to rent instead."""
    changes: list[str] = []
    total = sum(breakdown_bytes(arch, setup).values()) / GIB
    for label, change in _ladder(setup):
        setup = setup.replace(**change)
        if label.startswith("adapter.kind: qlora"):  # qlora replaces lora rather than adding to it
            changes = [c for c in changes if not c.startswith("adapter.kind")]
        changes.append(label)
        total = sum(breakdown_bytes(arch, setup).values()) / GIB
        if total <= gpu_memory_gb:
            return f"would fit with {', '.join(changes)} (≈ {total:.1f} GiB)"
    return (f"even with {', '.join(changes) or 'every saving'} it needs ≈ {total:.1f} GiB per GPU: "
            "use GPUs with more memory or more of them (e.g. hardware: 8xa100)")


def estimate_memory(model_config: dict[str, Any], *, adapter_kind: str, trainable: str, method_name: str,
                    max_length: int, micro_batch_size: int, precision: str, quantization: str,
                    gradient_checkpointing: bool, optimizer: str, sharding: str, world_size: int,
                    cpu_offload: bool, gpu_memory_gb: float | None, attention: str = "sdpa",
                    lora_rank: int = 16, lora_dropout: float = 0.05,
                    target_modules: list[str] | None = None, sft_languages: str = "both") -> MemoryEstimate:
    """Estimated peak memory per GPU of one training step, with a verdict against
    `gpu_memory_gb` (GiB) and, when it does not fit, the changes that would make it fit."""
    arch = Architecture.from_config(model_config)
    setup = TrainingSetup(
        adapter_kind=adapter_kind, trainable=trainable, method_name=method_name, max_length=max_length,
        micro_batch_size=micro_batch_size, precision=precision, quantization=quantization,
        gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, sharding=sharding,
        world_size=world_size, cpu_offload=cpu_offload, attention=attention, lora_rank=lora_rank,
        lora_dropout=lora_dropout, target_modules=tuple(target_modules) if target_modules else None,
        sft_languages=sft_languages,
    )
    estimate = _estimate(arch, setup, gpu_memory_gb)
    if not estimate.fits:
        estimate.suggestion = suggest(arch, setup, gpu_memory_gb)
    return estimate


def check_fit(recipe) -> MemoryEstimate | None:
    """The memory estimate of a resolved `Recipe`'s training stage (its most demanding arm),
    or None on CPU or when the model's config is not available offline."""
    hardware = recipe.hardware
    if not hardware.num_gpus:
        return None
    config = read_model_config(recipe.model)
    if config is None:
        return None
    method = recipe.method
    arms = [method.name, *method.baselines]
    heaviest = max(arms, key=lambda arm: sequences_per_sample(arm, method.sft_languages))
    try:
        return estimate_memory(
            config,
            adapter_kind=recipe.adapter.kind, trainable=recipe.adapter.trainable, method_name=heaviest,
            max_length=recipe.train.max_length, micro_batch_size=hardware.micro_batch_size,
            precision=hardware.precision, quantization=hardware.quantization,  # resolved: no fallbacks
            gradient_checkpointing=hardware.gradient_checkpointing, optimizer=hardware.optimizer,
            sharding=hardware.sharding, world_size=hardware.num_gpus * hardware.num_machines,
            cpu_offload=hardware.cpu_offload, gpu_memory_gb=hardware.gpu_memory_gb,
            attention=hardware.attention, lora_rank=recipe.adapter.r, lora_dropout=recipe.adapter.dropout,
            target_modules=recipe.adapter.target_modules, sft_languages=method.sft_languages,
        )
    except ValueError:  # a config without the numbers we need (not a decoder-only LM)
        return None
