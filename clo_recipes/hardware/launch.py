"""Multi-GPU and multi-node training through `accelerate launch`.

The engine runs every stage in its own process; a training stage on more than one GPU is
handed to a `Launcher`, which writes an accelerate config generated from the resolved
`hardware:` section (or takes the user's own), then re-enters this package once per GPU:

    python -m accelerate.commands.launch --config_file <run>/accelerate_config.yaml \\
        -m clo_recipes run <recipe> --only train-clo --no-launch --force [--set ...]

Only the training stage goes through the launcher; data stages run once, in the parent.
Each launched rank resolves the same recipe to the same plan, runs the one stage, and its
rank 0 finishes the stage folder; the parent holds the run lock meanwhile
(`CLO_RECIPES_LOCK_HELD`) and checks that the folder was finished.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from ..errors import CloError
from .batch import derive_batch

DEFAULT_PORT = 29500
CONFIG_NAME = "accelerate_config.yaml"
_MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no", "fp64": "no"}


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
    sharding = hardware.sharding or "none"
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
        "mixed_precision": _MIXED_PRECISION[hardware.precision or "bf16"],
        "downcast_bf16": "no",
        "num_machines": num_machines,
        "num_processes": num_processes,
        "machine_rank": machine_rank,
        "gpu_ids": "all",
        "main_training_function": "main",
        "rdzv_backend": "static",
        "use_cpu": False,
    }
    if num_machines > 1:
        config.update(main_process_ip=main_process_ip, main_process_port=main_process_port)
    if distributed_type == "FSDP":
        config["fsdp_config"] = _fsdp_config(hardware, fsdp2_available() if use_fsdp2 is None else use_fsdp2)
    elif distributed_type == "DEEPSPEED":
        config["deepspeed_config"] = _deepspeed_config(hardware, gradient_accumulation_steps, gradient_clipping)
    return config


def launch_command(config_path: str | Path, recipe_path: str | Path, stage_args: list[str], *,
                   python: str | None = None, launcher_args: list[str] | None = None) -> list[str]:
    """`accelerate launch` (as `python -m accelerate.commands.launch`, so it works without the
    venv's bin on PATH) re-entering this package for one stage."""
    return [python or sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
            *(launcher_args or []), "-m", "clo_recipes", "run", str(recipe_path), *stage_args]


def stage_args(stage_id: str, overrides: list[str], profile: str | None = None) -> list[str]:
    """What each launched rank runs: this one stage (forced: the parent decided it must run),
    no further launching, the same overrides and profile as the parent."""
    args = ["--only", stage_id, "--no-launch", "--force"]
    if profile:
        args += ["--profile", profile]
    for override in overrides:
        args += ["--set", override]
    return args


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return default


def _env_str(names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


@dataclass
class Launcher:
    """Runs training stages under `accelerate launch`; built by `for_plan` when the resolved
    hardware asks for more than one process or names its own accelerate config."""

    plan: Any
    recipe_path: Path
    overrides: list[str]
    num_gpus: int
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = DEFAULT_PORT
    profile: str | None = None
    user_config: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_plan(cls, plan, recipe_path: str | Path, overrides: list[str] | None = None, *,
                 profile: str | None = None, machine_rank: int | None = None,
                 main_process_ip: str | None = None, main_process_port: int | None = None) -> "Launcher | None":
        """Multi-node values not given come from the environment, as cluster schedulers set
        them: MACHINE_RANK (or NODE_RANK), MAIN_PROCESS_IP (or MASTER_ADDR), MAIN_PROCESS_PORT
        (or MASTER_PORT)."""
        hardware = plan.resolved.recipe.hardware
        num_gpus, num_machines = hardware.num_gpus or 0, hardware.num_machines or 1
        user_config = Path(hardware.accelerate_config) if hardware.accelerate_config else None
        if num_gpus * num_machines <= 1 and user_config is None:
            return None
        return cls(
            plan=plan, recipe_path=Path(recipe_path).resolve(), overrides=list(overrides or []),
            num_gpus=max(num_gpus, 1), num_machines=num_machines,
            machine_rank=machine_rank if machine_rank is not None else _env_int(("MACHINE_RANK", "NODE_RANK"), 0),
            main_process_ip=main_process_ip or _env_str(("MAIN_PROCESS_IP", "MASTER_ADDR")),
            main_process_port=main_process_port or _env_int(("MAIN_PROCESS_PORT", "MASTER_PORT"), DEFAULT_PORT),
            profile=profile, user_config=user_config,
        )

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_machines

    @property
    def is_main_machine(self) -> bool:
        """Machine 0 finishes stage folders; the others only lend their GPUs."""
        return self.machine_rank == 0

    def wants(self, stage) -> bool:
        return stage.kind == "train"

    @property
    def config_path(self) -> Path:
        return self.user_config or self.plan.run_dir / CONFIG_NAME

    def config(self) -> dict[str, Any]:
        recipe = self.plan.resolved.recipe
        hardware = recipe.hardware
        _, accumulation = derive_batch(recipe.train.global_batch_size, hardware.micro_batch_size or 1, self.world_size)
        return accelerate_config(
            hardware, num_processes=self.world_size, num_machines=self.num_machines,
            machine_rank=self.machine_rank, main_process_ip=self.main_process_ip,
            main_process_port=self.main_process_port, gradient_accumulation_steps=accumulation,
            gradient_clipping=recipe.train.max_grad_norm,
        )

    def command(self, stage) -> list[str]:
        # a user's config is used as written, except for what differs per machine
        extra = ["--machine_rank", str(self.machine_rank)] if self.user_config and self.num_machines > 1 else []
        return launch_command(self.config_path, self.recipe_path, stage_args(stage.id, self.overrides, self.profile),
                              launcher_args=extra)

    def check_machine(self) -> None:
        """Problems a launch would only reveal after minutes of NCCL start-up."""
        from .detect import detect

        hardware = self.plan.resolved.recipe.hardware
        if (hardware.sharding or "").startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            raise CloError(f"hardware.sharding: {hardware.sharding} needs DeepSpeed, which is not installed",
                           hint="pip install deepspeed, or use hardware.sharding: fsdp")
        seen = detect().num_gpus
        if seen < self.num_gpus:
            raise CloError(f"the recipe asks for {self.num_gpus} GPUs per machine; {seen} visible here",
                           hint=f"--set hardware.num_gpus={seen} (keeping train.global_batch_size divisible), "
                                "or run on a machine with more GPUs")

    def write_config(self) -> Path:
        if self.user_config is not None:
            if not self.user_config.is_file():
                raise CloError(f"hardware.accelerate_config not found: {self.user_config}")
            return self.user_config
        path = self.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        return path

    def run_stage(self, stage) -> None:
        self.check_machine()
        self.write_config()
        env = {**os.environ, **self.env, "CLO_RECIPES_LOCK_HELD": "1"}  # the parent holds the run lock
        completed = subprocess.run(self.command(stage), env=env, check=False)
        if completed.returncode != 0:
            raise CloError(f"accelerate launch of {stage.id} failed (exit code {completed.returncode})",
                           hint="see the output above; re-running resumes from the last checkpoint")

    def describe(self, console) -> None:
        """What `run --dry-run` shows: the exact command per training stage and the config."""
        where = f"machine {self.machine_rank} of {self.num_machines}, " if self.num_machines > 1 else ""
        console.print(f"[bold]Training launches through accelerate[/] ({where}{self.world_size} processes):")
        for stage in self.plan.stages:
            if self.wants(stage):
                console.print("  " + shlex.join(self.command(stage)), markup=False, highlight=False, soft_wrap=True)
        if self.user_config is not None:
            console.print(f"accelerate config: {self.user_config} (yours)")
        else:
            console.print(f"accelerate config ({self.config_path}):")
            console.print(yaml.safe_dump(self.config(), sort_keys=False).rstrip(), markup=False, highlight=False)
