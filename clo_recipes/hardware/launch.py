"""The accelerate configuration of a resolved `hardware:` section: DDP, FSDP (1 or 2) or
DeepSpeed ZeRO, mixed precision, machines and ranks. What starts the processes and which
stage each runs is the launcher's (`runner/launch.py`); this module only says how accelerate
is configured, so it needs neither the engine nor the CLI.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..errors import CloError
from .precision import mixed_precision

DEFAULT_PORT = 29500
CONFIG_NAME = "accelerate_config.yaml"


def _version_tuple(package: str) -> tuple[int, ...]:
    try:
        text = version(package)
    except PackageNotFoundError:
        return ()
    parts = []
    for piece in text.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def fsdp2_available() -> bool:
    """FSDP2 (per-parameter sharding) needs accelerate >= 1.6 and torch >= 2.6. Read from the
    package metadata: importing either would cost seconds."""
    return _version_tuple("accelerate") >= (1, 6) and _version_tuple("torch") >= (2, 6)


def _fsdp_config(hardware, use_fsdp2: bool) -> dict[str, Any]:
    common = {
        # one FSDP unit per decoder layer: accelerate takes the layer class from the model's
        # `_no_split_modules`, so no architecture table is needed here
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_offload_params": bool(hardware.cpu_offload),
        # resume reads sharded checkpoints; the train stage gathers the final weights itself
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        # rank 0 reads the weights, the others get them by broadcast: 1x, not 8x, host RAM
        "fsdp_cpu_ram_efficient_loading": True,
        # checkpointing stays the model's own (hardware.gradient_checkpointing), one code path
        # for one GPU and many
        "fsdp_activation_checkpointing": False,
    }
    if use_fsdp2:
        return {"fsdp_version": 2, "fsdp_reshard_after_forward": True, **common}
    return {
        "fsdp_version": 1,
        "fsdp_sharding_strategy": "FULL_SHARD",
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_forward_prefetch": False,
        # attention-only training freezes part of every layer: FSDP1 can only shard a layer
        # with mixed requires_grad when it keeps the original parameters
        "fsdp_use_orig_params": True,
        "fsdp_sync_module_states": True,
        **common,
    }


def _deepspeed_config(hardware, gradient_accumulation_steps: int, gradient_clipping: float | None) -> dict[str, Any]:
    stage = 3 if hardware.sharding == "deepspeed-zero3" else 2
    offload = "cpu" if hardware.cpu_offload else "none"
    config: dict[str, Any] = {
        "zero_stage": stage,
        "offload_optimizer_device": offload,
        # DeepSpeed owns accumulation and clipping; they must equal the training loop's
        "gradient_accumulation_steps": gradient_accumulation_steps,
    }
    if gradient_clipping is not None:
        config["gradient_clipping"] = gradient_clipping
    if stage == 3:
        config.update(offload_param_device=offload, zero3_init_flag=True, zero3_save_16bit_model=True)
    return config


def accelerate_config(hardware, *, num_processes: int, num_machines: int = 1, machine_rank: int = 0,
                      main_process_ip: str | None = None, main_process_port: int = DEFAULT_PORT,
                      gradient_accumulation_steps: int = 1, gradient_clipping: float | None = None,
                      use_fsdp2: bool | None = None) -> dict[str, Any]:
    """An accelerate config file (as a dict) for a resolved `hardware` section.
    `num_processes` counts all processes on all machines, as accelerate does."""
    if num_machines > 1 and not main_process_ip:
        raise CloError("a multi-node launch needs the address of machine 0",
                       hint="pass --main-process-ip <ip of machine 0> (and --machine-rank on each machine)")
    if not 0 <= machine_rank < num_machines:
        raise CloError(f"machine rank {machine_rank} is outside 0..{num_machines - 1}")
    sharding = hardware.sharding
    if num_processes <= 1:
        distributed_type = "NO"
    elif sharding == "fsdp":
        distributed_type = "FSDP"
    elif sharding.startswith("deepspeed"):
        distributed_type = "DEEPSPEED"
    else:
        distributed_type = "MULTI_GPU"
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": distributed_type,
        "mixed_precision": mixed_precision(hardware.precision),
        "downcast_bf16": "no",
        "num_machines": num_machines,
        "num_processes": num_processes,
        "machine_rank": machine_rank,
        "gpu_ids": "all",
        "main_training_function": "main",
        "rdzv_backend": "static",
        # CPU processes are asked for through ACCELERATE_USE_CPU (see the module docstring)
        "use_cpu": False,
    }
    if num_machines > 1:
        config.update(main_process_ip=main_process_ip, main_process_port=main_process_port)
    if distributed_type == "FSDP":
        config["fsdp_config"] = _fsdp_config(hardware, fsdp2_available() if use_fsdp2 is None else use_fsdp2)
    elif distributed_type == "DEEPSPEED":
        config["deepspeed_config"] = _deepspeed_config(hardware, gradient_accumulation_steps, gradient_clipping)
    return config
