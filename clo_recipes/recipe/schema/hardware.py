"""`hardware:` a named profile (data file) plus any value you want to override."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Section

Precision = Literal["fp32", "bf16", "fp16", "fp64"]
# Fields every profile sets, so after `resolve` they always have a value and no stage needs a
# fallback (`num_processes`, `gpu_memory_gb` and `accelerate_config` may stay unset: GPU
# processes follow the GPUs, a CPU has no GPU memory, the config file is optional).
RESOLVED_FIELDS = ("num_gpus", "num_machines", "precision", "quantization", "attention", "gradient_checkpointing",
                   "optimizer", "micro_batch_size", "sharding", "cpu_offload")
Sharding = Literal["none", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]


class HardwareSection(Section):
    """`hardware: single-24gb` is short for `hardware: {profile: single-24gb}`. Every other
    field is unset by default and then taken from the profile; set it to override."""

    profile: str = Field(
        default="auto",
        description="`cpu`, `single-24gb`, `single-48gb`, `single-80gb`, `8xa100`, `8xh100`, or `auto` (from the GPUs seen).",
    )
    num_gpus: int | None = Field(default=None, ge=0, description="GPUs per machine (0 = CPU).")
    num_processes: int | None = Field(
        default=None, ge=1,
        description="Training processes per machine on CPU (`num_gpus: 0`): more than 1 trains with DDP/FSDP over "
                    "gloo through the same `accelerate launch` as GPUs. On GPUs it is one per GPU.",
    )
    num_machines: int | None = Field(default=None, ge=1, description="Machines (multi-node).")
    gpu_memory_gb: float | None = Field(default=None, gt=0, description="Memory per GPU, GiB.")
    precision: Precision | None = Field(
        default=None, description="Compute dtype; `fp64` is for numerical checks on CPU (bit-level comparisons of runs)."
    )
    quantization: Literal["none", "nf4"] | None = Field(
        default=None, description="4-bit NF4 base weights (bitsandbytes); implied by `adapter.kind: qlora`."
    )
    attention: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        default=None, description="Attention kernel; `flash_attention_2` falls back to `sdpa` when not installed."
    )
    gradient_checkpointing: bool | None = Field(default=None, description="Trade compute for activation memory.")
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit"] | None = Field(
        default=None, description="Optimizer; 8-bit variants need bitsandbytes."
    )
    micro_batch_size: int | None = Field(default=None, ge=1, description="Samples per GPU per forward pass.")
    sharding: Sharding | None = Field(default=None, description="How weights, gradients and optimizer state are split.")
    cpu_offload: bool | None = Field(default=None, description="Offload sharded parameters/optimizer state to CPU.")
    accelerate_config: str | None = Field(
        default=None, description="Your own accelerate config file; replaces the generated one."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"profile": value} if isinstance(value, str) else value
