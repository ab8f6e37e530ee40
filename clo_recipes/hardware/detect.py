"""What this machine has: GPUs (via `nvidia-smi`), installed kernels, CPUs and RAM.

Never imports torch: `plan` (and `hardware: auto`) must stay fast, and importing torch with
CUDA takes seconds. `nvidia-smi` answers in tens of milliseconds and is on every machine with
an NVIDIA driver; packages are checked with `importlib.util.find_spec`, which does not import them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

MIB_PER_GIB = 1024

# Per-GPU memory (GiB) each single-GPU profile assumes, smallest first. The same numbers are in
# the profile files' `gpu_memory_gb`; a test keeps them equal. They are the *smallest* card of
# each class (an A10/L4 reports 22.5 GiB, an L40S/A40 45 GiB, an H100 79.6 GiB), so a plan that
# fits the profile fits every card in it.
SINGLE_GPU_PROFILES: tuple[tuple[str, float], ...] = (
    ("single-24gb", 22.0),
    ("single-48gb", 44.0),
    ("single-80gb", 79.0),
)
EIGHT_GPU_MEMORY_GB = 79.0
HOPPER = (9, 0)  # H100/H200/H800/GH200
AMPERE = (8, 0)  # first generation with bf16 and flash-attention 2

_QUERY_FIELDS = ("index", "uuid", "name", "memory.total", "compute_cap")


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_gb: float
    compute_capability: tuple[int, int] | None = None  # None: driver too old to report it
    uuid: str = ""

    @property
    def bf16(self) -> bool:
        return self.compute_capability is not None and self.compute_capability >= AMPERE


@dataclass(frozen=True)
class MachineFacts:
    gpus: tuple[GPU, ...] = ()
    cpu_count: int = 1
    ram_gb: float | None = None
    flash_attn: bool = False
    bitsandbytes: bool = False
    deepspeed: bool = False
    notes: tuple[str, ...] = field(default=())  # why detection saw less than it might have

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @property
    def gpu_memory_gb(self) -> float | None:
        """The smallest GPU's memory: with data parallelism every rank must fit."""
        return min((gpu.memory_gb for gpu in self.gpus), default=None)

    @property
    def bf16(self) -> bool:
        return bool(self.gpus) and all(gpu.bf16 for gpu in self.gpus)

    @property
    def hopper(self) -> bool:
        return bool(self.gpus) and all(
            gpu.compute_capability is not None and gpu.compute_capability >= HOPPER for gpu in self.gpus
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpus": [{"index": g.index, "name": g.name, "memory_gb": round(g.memory_gb, 2),
                      "compute_capability": ".".join(map(str, g.compute_capability)) if g.compute_capability else None}
                     for g in self.gpus],
            "bf16": self.bf16, "flash_attn": self.flash_attn, "bitsandbytes": self.bitsandbytes,
            "deepspeed": self.deepspeed, "cpu_count": self.cpu_count,
            "ram_gb": round(self.ram_gb, 1) if self.ram_gb is not None else None,
            "auto_profile": pick_profile(self),
        }


def _capability(text: str) -> tuple[int, int] | None:
    try:
        major, minor = text.strip().split(".")
        return int(major), int(minor)
    except ValueError:  # "[N/A]" or a field this driver does not know
        return None


def parse_nvidia_smi(text: str) -> list[GPU]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.total[,compute_cap]
    --format=csv,noheader,nounits` (memory in MiB)."""
    gpus = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) < 4 or not cells[0].isdigit():
            continue
        try:
            memory_mib = float(cells[3])
        except ValueError:
            continue
        gpus.append(GPU(index=int(cells[0]), uuid=cells[1], name=cells[2], memory_gb=memory_mib / MIB_PER_GIB,
                        compute_capability=_capability(cells[4]) if len(cells) > 4 else None))
    return gpus


def visible(gpus: list[GPU], cuda_visible_devices: str | None) -> list[GPU]:
    """The GPUs a CUDA program will see: `CUDA_VISIBLE_DEVICES` lists indices or UUIDs (or
    their prefixes), in the order the program numbers them; an empty value hides all."""
    if cuda_visible_devices is None:
        return gpus
    chosen = []
    for item in (part.strip() for part in cuda_visible_devices.split(",")):
        if not item:
            continue
        match = [g for g in gpus if (item.isdigit() and g.index == int(item)) or
                 (not item.isdigit() and g.uuid.startswith(item))]
        if not match:
            break  # CUDA stops at the first invalid entry
        chosen.append(match[0])
    return chosen


Runner = Callable[[list[str]], str]


def _run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout


def query_gpus(runner: Runner = _run) -> tuple[list[GPU], str | None]:
    """All NVIDIA GPUs, or none and a note saying why."""
    if runner is _run and shutil.which("nvidia-smi") is None:
        return [], None  # no NVIDIA driver: a CPU machine, nothing to note
    base = ["nvidia-smi", "--format=csv,noheader,nounits"]
    for fields in (_QUERY_FIELDS, _QUERY_FIELDS[:-1]):  # drivers before 510 lack compute_cap
        try:
            return parse_nvidia_smi(runner([*base, "--query-gpu=" + ",".join(fields)])), None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            note = f"nvidia-smi failed: {exc}"
    return [], note


def _has(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _ram_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return None


def detect(runner: Runner = _run) -> MachineFacts:
    gpus, note = query_gpus(runner)
    gpus = visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return MachineFacts(
        gpus=tuple(gpus),
        cpu_count=_cpu_count(),
        ram_gb=_ram_gb(),
        flash_attn=_has("flash_attn"),
        bitsandbytes=_has("bitsandbytes"),
        deepspeed=_has("deepspeed"),
        notes=(note,) if note else (),
    )


def pick_profile(facts: MachineFacts | None = None) -> str:
    """The profile `hardware: auto` stands for on this machine.

    Eight or more 80 GB GPUs -> `8xh100` (Hopper) or `8xa100`; otherwise the single-GPU profile
    whose memory the smallest GPU has (one GPU is used; set `hardware.num_gpus` for more).
    GPUs smaller than every profile get `single-24gb`, and `machine_adjustments` lowers its
    `gpu_memory_gb` to what the card has, so the memory check stays honest.
    """
    facts = detect() if facts is None else facts
    if not facts.gpus:
        return "cpu"
    memory = facts.gpu_memory_gb or 0.0
    if facts.num_gpus >= 8 and memory >= EIGHT_GPU_MEMORY_GB:
        return "8xh100" if facts.hopper else "8xa100"
    fitting = [name for name, needed in SINGLE_GPU_PROFILES if memory >= needed]
    return fitting[-1] if fitting else SINGLE_GPU_PROFILES[0][0]


def machine_adjustments(hardware: dict[str, Any], facts: MachineFacts | None = None) -> dict[str, tuple[Any, str]]:
    """Values of a resolved `hardware` mapping this machine cannot honour, each with the value
    to use instead and why. Meant for `hardware: auto` (the user asked for "what this machine
    can do"); with a named profile they are worth a warning, since the run may be meant for
    another machine. CPU profiles (num_gpus 0) need no adjustment."""
    facts = detect() if facts is None else facts
    if not facts.gpus or not hardware.get("num_gpus"):
        return {}
    changes: dict[str, tuple[Any, str]] = {}
    memory = facts.gpu_memory_gb
    if memory is not None and hardware.get("gpu_memory_gb") and memory < hardware["gpu_memory_gb"]:
        changes["gpu_memory_gb"] = (round(memory, 1), f"the GPU has {memory:.1f} GiB")
    if hardware.get("precision") == "bf16" and not facts.bf16:
        changes["precision"] = ("fp16", "this GPU has no bf16 (compute capability < 8.0)")
    if hardware.get("attention") == "flash_attention_2" and not (facts.flash_attn and facts.bf16):
        why = "flash-attn is not installed" if not facts.flash_attn else "flash-attention 2 needs an Ampere or newer GPU"
        changes["attention"] = ("sdpa", why)
    if hardware.get("optimizer") in ("adamw_8bit", "paged_adamw_8bit") and not facts.bitsandbytes:
        changes["optimizer"] = ("adamw_torch", "bitsandbytes is not installed")
    if str(hardware.get("sharding", "")).startswith("deepspeed") and not facts.deepspeed:
        changes["sharding"] = ("fsdp", "deepspeed is not installed")
    if (hardware.get("num_gpus") or 0) > facts.num_gpus and (hardware.get("num_machines") or 1) == 1:
        changes["num_gpus"] = (facts.num_gpus, f"{facts.num_gpus} GPU(s) visible")
    return changes


def four_bit_backend() -> str | None:
    """The 4-bit (NF4) backend this machine has: bitsandbytes runs NF4 on CUDA and, since 0.48,
    on CPU, so its presence is what counts. None when there is none."""
    if not _has("bitsandbytes"):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"bitsandbytes {version('bitsandbytes')}"
    except PackageNotFoundError:
        return "bitsandbytes"


def check_quantization(recipe: Any) -> None:
    """Plan-time check (stage table): NF4 / QLoRA needs a 4-bit backend. Raises before any
    model is loaded, naming the field, instead of a traceback at load time."""
    if recipe.hardware.quantization != "nf4" or four_bit_backend() is not None:
        return
    from ..errors import CloError

    # the stage table reports this at adapter.kind, so the message starts with its value
    asked = "qlora" if recipe.adapter.kind == "qlora" else "hardware.quantization: nf4"
    raise CloError(f"{asked} needs a 4-bit backend and none is installed (bitsandbytes not found)",
                   hint="pip install bitsandbytes==0.50.2 (runs NF4 on CPU and CUDA), "
                        "or use adapter.kind: lora with hardware.quantization: none")


# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: x86's AVX512-BF16 or AMX-BF16,
# Arm's BF16 extension. Without them torch still computes bf16 but through fp32 conversions in
# every kernel: slower than fp32 itself, so there is no reason to ask for it there.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has native bf16 instructions; None where its flags cannot be read."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return bool(CPU_BF16_FLAGS & set(value.split()))
    return None


def check_precision(recipe: Any) -> None:
    """Plan-time check (stage table): bf16 on a CPU (`num_gpus: 0`) needs native bf16
    instructions. GPUs without bf16 are lowered to fp16 by `machine_adjustments` instead."""
    if recipe.hardware.precision != "bf16" or recipe.hardware.num_gpus or cpu_bf16() is not False:
        return
    from ..errors import CloError

    raise CloError("hardware.precision: bf16 needs a CPU with bf16 instructions (AVX512-BF16, AMX or Arm BF16) "
                   "and this one has none",
                   hint="use hardware.precision: fp32 on this machine (bf16 would be emulated, slower than fp32)")
