"""Multi-process and multi-node training: the processes, the rendezvous and the stage each
rank runs. The engine runs every stage in its own process; the stages the stage table marks
`launched` (reference and training) on more than one process (GPUs, or
`hardware.num_processes` on CPU) are handed to a `Launcher`, which writes an accelerate config
generated from the resolved `hardware:` section (`hardware/launch.py`; or takes the user's
own), then re-enters this package once per process:

    python -m accelerate.commands.launch --config_file <run>/accelerate_config.yaml \\
        -m clo_recipes run <recipe> --only train-clo --no-launch --force [--set ...]

Data stages run once, in the parent, on machine 0. Each launched rank resolves the same
recipe to the same plan, runs the one stage, and its rank 0 finishes the stage folder; the
parent holds the run directory's claim meanwhile (`CLO_RECIPES_CLAIM_HELD`) and checks that the folder was
finished. On CPU the same config and command are used: torchrun starts the processes, and
`ACCELERATE_USE_CPU=true` makes accelerate join them over gloo (a `use_cpu: true` config
would make `accelerate launch` start one process, not N).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine.plan import Plan, PlannedStage
from ..engine.run import CLAIM_HELD
from ..errors import CloError
from ..hardware.batch import derive_batch, processes_per_machine
from ..hardware.launch import CONFIG_NAME, DEFAULT_PORT, accelerate_config


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


def _env_int(names: tuple[str, ...], default: int | None) -> int | None:
    for name in names:
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return default


def _env_str(names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def usable_cores() -> int:
    """CPU cores this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def port_is_free(port: int) -> bool:
    """No process listens on `port` (a port left in TIME_WAIT by the previous stage counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def die_with_launcher() -> None:
    """In a launched rank: end when the launcher ends. torchrun starts each rank in its own
    session, so a `kill -9` of the run (the launcher's process group) would leave the ranks
    training on, writing the stage folder a re-run then also writes. Linux only (prctl)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the line above
        os._exit(1)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Launcher:
    """Runs the reference and training stages under `accelerate launch`; built by `for_plan`
    when the resolved hardware asks for more than one process or names its own accelerate
    config. GPUs and CPU take the same path: one config, one `accelerate launch` (torchrun);
    on CPU the ranks are told to stay on CPU (`ACCELERATE_USE_CPU`), so accelerate joins them
    with gloo instead of NCCL."""

    plan: Plan
    recipe_path: Path
    overrides: list[str]
    processes: int  # per machine
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None  # None: the default port, or on one machine any free one
    profile: str | None = None
    user_config: Path | None = None
    on_cpu: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_plan(cls, plan: Plan, recipe_path: str | Path, overrides: list[str] | None = None, *,
                 profile: str | None = None, machine_rank: int | None = None,
                 main_process_ip: str | None = None, main_process_port: int | None = None) -> "Launcher | None":
        """Multi-node values not given come from the environment, as cluster schedulers set
        them: MACHINE_RANK (or NODE_RANK), MAIN_PROCESS_IP (or MASTER_ADDR), MAIN_PROCESS_PORT
        (or MASTER_PORT)."""
        hardware = plan.resolved.recipe.hardware
        per_machine, num_machines = processes_per_machine(hardware), hardware.num_machines
        user_config = Path(hardware.accelerate_config) if hardware.accelerate_config else None
        if per_machine * num_machines <= 1 and user_config is None:
            return None
        on_cpu = not hardware.num_gpus
        return cls(
            plan=plan, recipe_path=Path(recipe_path).resolve(), overrides=list(overrides or []),
            processes=per_machine, num_machines=num_machines,
            machine_rank=machine_rank if machine_rank is not None else _env_int(("MACHINE_RANK", "NODE_RANK"), 0),
            main_process_ip=main_process_ip or _env_str(("MAIN_PROCESS_IP", "MASTER_ADDR")),
            main_process_port=main_process_port or _env_int(("MAIN_PROCESS_PORT", "MASTER_PORT"), None),
            profile=profile, user_config=user_config, on_cpu=on_cpu,
            env={"ACCELERATE_USE_CPU": "true"} if on_cpu else {},
        )

    @property
    def world_size(self) -> int:
        return self.processes * self.num_machines

    @property
    def num_gpus(self) -> int:
        return 0 if self.on_cpu else self.processes

    @property
    def is_main_machine(self) -> bool:
        """Machine 0 runs the data stages and finishes stage folders; the others join the
        launched stages (`engine.run.join`)."""
        return self.machine_rank == 0

    def wants(self, stage: PlannedStage) -> bool:
        """The stages that run on every process: those the stage table marks `launched` (the
        model passes: reference and training)."""
        return stage.spec.launched

    @property
    def port(self) -> int:
        """The rendezvous port: as given; else on one machine 0 (accelerate picks a free one,
        so two runs on one machine never collide), on several the default."""
        if self.main_process_port is not None:
            return self.main_process_port
        return DEFAULT_PORT if self.num_machines > 1 else 0

    @property
    def config_path(self) -> Path:
        """The generated config; one per machine on several (they share the run folder, and
        each file holds its machine's rank)."""
        if self.user_config is not None:
            return self.user_config
        if self.num_machines > 1:
            return self.plan.run_dir / CONFIG_NAME.replace(".yaml", f"-machine{self.machine_rank}.yaml")
        return self.plan.run_dir / CONFIG_NAME

    def config(self) -> dict[str, Any]:
        recipe = self.plan.resolved.recipe
        hardware = recipe.hardware
        _, accumulation = derive_batch(recipe.train.global_batch_size, hardware.micro_batch_size, self.world_size)
        config = accelerate_config(
            hardware, num_processes=self.world_size, num_machines=self.num_machines,
            machine_rank=self.machine_rank, main_process_ip=self.main_process_ip,
            main_process_port=self.port, gradient_accumulation_steps=accumulation,
            gradient_clipping=recipe.train.max_grad_norm,
        )
        config["main_process_port"] = self.port
        return config

    def command(self, stage: PlannedStage) -> list[str]:
        # a user's config is used as written, except for what differs per machine
        extra = ["--machine_rank", str(self.machine_rank)] if self.user_config and self.num_machines > 1 else []
        return launch_command(self.config_path, self.recipe_path, stage_args(stage.id, self.overrides, self.profile),
                              launcher_args=extra)

    def check_machine(self) -> None:
        """Problems a launch would only reveal after minutes of start-up, or as a traceback."""
        from ..hardware.detect import detect

        hardware = self.plan.resolved.recipe.hardware
        if hardware.sharding.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
            raise CloError(f"hardware.sharding: {hardware.sharding} needs DeepSpeed, which is not installed",
                           hint="pip install deepspeed, or use hardware.sharding: fsdp")
        if self.on_cpu:
            if hardware.sharding and hardware.sharding.startswith("deepspeed"):
                raise CloError(f"hardware.sharding: {hardware.sharding} needs GPUs; DeepSpeed ZeRO does not train "
                               "on CPU processes", hint="use hardware.sharding: fsdp or none on CPU")
            if hardware.sharding == "fsdp":
                raise CloError("hardware.sharding: fsdp does not run on CPU processes: accelerate enables its FSDP "
                               "plugin (FSDP1 and FSDP2) only on GPUs and other accelerators; on CPU it would "
                               "silently train plain DDP",
                               hint="on CPU use hardware.sharding: none (DDP over gloo, the same weights); "
                                    "keep fsdp for GPUs")
            cores = usable_cores()
            if self.processes > cores:
                raise CloError(f"hardware.num_processes={self.processes} asks for {self.processes} training "
                               f"processes on this machine; it has {cores} CPU cores",
                               hint=f"--set hardware.num_processes={cores} (keeping train.global_batch_size "
                                    "divisible); more processes than cores only slows training down")
        else:
            seen = detect().num_gpus
            if seen < self.processes:
                raise CloError(f"the recipe asks for {self.processes} GPUs per machine; {seen} visible here",
                               hint=f"--set hardware.num_gpus={seen} (keeping train.global_batch_size divisible), "
                                    "or run on a machine with more GPUs")
        if self.is_main_machine and self.port and not port_is_free(self.port):
            raise CloError(f"port {self.port} on this machine is in use: the processes of {self.world_size}-process "
                           "training meet there (another training launch may hold it)",
                           hint="set MAIN_PROCESS_PORT=<a free port> on every machine, or wait for the other run")

    def write_config(self) -> Path:
        if self.user_config is not None:
            if not self.user_config.is_file():
                raise CloError(f"hardware.accelerate_config not found: {self.user_config}")
            return self.user_config
        path = self.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        return path

    def run_stage(self, stage: PlannedStage) -> None:
        self.check_machine()
        self.write_config()
        env = {**os.environ, **self.env, CLAIM_HELD: "1"}  # the parent holds the run directory's claim
        completed = subprocess.run(self.command(stage), env=env, check=False)
        if completed.returncode != 0:
            raise CloError(
                f"{stage.id} on {self.world_size} processes failed ({_exit_reason(completed.returncode)}): "
                "a training process stopped, and the launcher stopped the others",
                hint="the launcher's output above names the rank and its error; finished stages are kept, and "
                     "re-running resumes this one from its last checkpoint",
            )

    def describe(self, console) -> None:
        """What `run --dry-run` shows: the exact command per launched stage and the config."""
        where = f"machine {self.machine_rank} of {self.num_machines}, " if self.num_machines > 1 else ""
        device = ", CPU processes over gloo" if self.on_cpu else ""
        console.print(f"[bold]Reference and training launch through accelerate[/] "
                      f"({where}{self.world_size} processes{device}):")
        prefix = "".join(f"{name}={value} " for name, value in self.env.items())
        for stage in self.plan.stages:
            if self.wants(stage):
                console.print("  " + prefix + shlex.join(self.command(stage)), markup=False, highlight=False,
                              soft_wrap=True)
        if self.user_config is not None:
            console.print(f"accelerate config: {self.user_config} (yours)")
        else:
            console.print(f"accelerate config ({self.config_path}):")
            console.print(yaml.safe_dump(self.config(), sort_keys=False).rstrip(), markup=False, highlight=False)
