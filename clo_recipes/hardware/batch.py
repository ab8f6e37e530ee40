"""One meaning for "batch size": the recipe states the global batch (samples per optimizer
step, across all processes: one per GPU, or `hardware.num_processes` on CPU); the hardware
profile states how many samples one process takes per forward pass; gradient accumulation
makes up the rest."""

from __future__ import annotations

from ..errors import CloError


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def derive_batch(global_batch_size: int, micro_batch_size: int, world_size: int,
                 unit: str = "GPUs") -> tuple[int, int]:
    """(micro batch per GPU, gradient accumulation steps) so that
    micro * accumulation * world_size == global_batch_size exactly."""
    if min(global_batch_size, micro_batch_size, world_size) < 1:
        raise ValueError("batch sizes and world size must be positive")
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step == 0:
        return micro_batch_size, global_batch_size // per_step
    raise CloError(
        f"train.global_batch_size={global_batch_size} is not a multiple of "
        f"micro_batch_size × {unit} = {micro_batch_size} × {world_size} = {per_step}",
        hint=_suggestion(global_batch_size, micro_batch_size, world_size),
    )


def _suggestion(global_batch_size: int, micro_batch_size: int, world_size: int) -> str:
    per_step = micro_batch_size * world_size
    lower = global_batch_size // per_step * per_step
    options = [f"train.global_batch_size: {n}" for n in dict.fromkeys((lower, lower + per_step)) if n > 0]
    if global_batch_size % world_size == 0:
        # the largest micro batch not above the profile's that divides the per-GPU share
        share = global_batch_size // world_size
        micro = max(d for d in _divisors(share) if d <= micro_batch_size)
        options.append(f"hardware.micro_batch_size: {micro}")
    return "set " + " or ".join(options)


def processes_per_machine(hardware) -> int:
    """Training processes on one machine: one per GPU, or `num_processes` on CPU (gloo)."""
    gpus = hardware.num_gpus
    asked = getattr(hardware, "num_processes", None)
    if gpus > 0:
        if asked not in (None, gpus):
            raise CloError(f"hardware.num_processes={asked} with num_gpus={gpus}: on GPUs it is one process per GPU",
                           hint=f"drop hardware.num_processes, or set it to {gpus}")
        return gpus
    return asked or 1


def world_size(hardware) -> int:
    """Processes on all machines together, as accelerate and torchrun count them."""
    return processes_per_machine(hardware) * hardware.num_machines


def check_batch(recipe) -> None:
    """The resolved recipe's batch split, raised as a CloError at plan time (not hours later)."""
    hardware = recipe.hardware
    derive_batch(recipe.train.global_batch_size, hardware.micro_batch_size, world_size(hardware),
                 unit="GPUs" if hardware.num_gpus else "processes")
