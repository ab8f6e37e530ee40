"""Checkpoints inside the train stage's work folder, and resuming from the newest one.

    <work_dir>/checkpoints/<phase>-step-000050/
        trainable.safetensors   only the weights that train (attention projections or LoRA)
        optimizer.pt  scheduler.pt  rng-<rank>.pt
        state.json              phase, step, steps of the phase, recipe identity, file sizes

Writes go to a temporary folder renamed into place, so a crash mid-save never leaves a
checkpoint that looks complete; `state.json` lists every file with its size, so a file lost
or cut short later (a full disk, a partial copy) is found and the previous checkpoint used.
The two newest are kept. `identity` is a hash of every recipe value training reads: a folder
written by a different recipe is refused rather than resumed. With FSDP or DeepSpeed the sharded state is saved through accelerate instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import CloError

KEEP = 2
log = logging.getLogger("clo_recipes")


def identity_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    phase: str
    step: int
    phase_steps: int

    @property
    def phase_done(self) -> bool:
        return self.step >= self.phase_steps


def _sharded(accelerator: Any) -> bool:
    return accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")


class CheckpointStore:
    def __init__(self, folder: Path, identity: str, phases: tuple[str, ...]):
        self.folder = folder
        self.identity = identity
        self.phases = phases
        self.broken: list[tuple[Path, str]] = []  # (file, what is wrong), found by `all`
        self._warned: set[Path] = set()

    def all(self) -> list[Checkpoint]:
        """The complete checkpoints, oldest first. One with a missing or cut-short file (a full
        disk, a partial copy) is left out with a warning naming the file, so resuming falls
        back to the previous good one."""
        found = []
        self.broken = []
        for state_file in sorted(self.folder.glob("*-step-*/state.json"), reverse=True):  # newest first
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
            except (ValueError, OSError) as error:
                self.broken.append((state_file, f"unreadable ({error})"))
                continue
            if state.get("identity") != self.identity:
                raise CloError(
                    f"checkpoint {state_file.parent} was written by a different recipe",
                    hint=f"delete {self.folder} (or run with --force) to start this training afresh",
                )
            problem = _missing_or_short(state_file.parent, state.get("files"))
            if problem is not None:
                self.broken.append(problem)
                continue
            if state["phase"] in self.phases:
                found.append(Checkpoint(state_file.parent, state["phase"], state["step"], state["phase_steps"]))
        for path, why in self.broken:
            if path in self._warned:
                continue
            self._warned.add(path)
            log.warning("checkpoint %s is incomplete: %s is %s; resuming from an earlier one", path.parent, path, why)
        return sorted(found, key=lambda c: (self.phases.index(c.phase), c.step))

    def latest(self) -> Checkpoint | None:
        found = self.all()
        if not found and self.broken:
            path, why = self.broken[0]
            raise CloError(f"checkpoint file {path} is {why}, and no earlier complete checkpoint is left",
                           hint=f"restore the file, or delete {path.parent} to train this phase from its start")
        return found[-1] if found else None

    def save(self, accelerator: Any, model: Any, optimizer: Any, scheduler: Any, *, phase: str, step: int,
             phase_steps: int) -> Path:
        import torch
        from safetensors.torch import save_file

        name = f"{phase}-step-{step:06d}"
        final = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        if _sharded(accelerator):
            accelerator.save_state(str(temporary))
        elif accelerator.is_main_process:
            weights = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in trainable_parameters(accelerator.unwrap_model(model))}
            save_file(weights, str(temporary / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), temporary / "optimizer.pt")
            torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
        rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, temporary / f"rng-{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"phase": phase, "step": step, "phase_steps": phase_steps, "identity": self.identity,
                     "files": _listing(temporary)}  # sizes, so a cut-short file is found on resume
            (temporary / "state.json").write_text(json.dumps(state, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            temporary.rename(final)
            for old in self.all()[:-KEEP]:
                shutil.rmtree(old.path, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load_weights(checkpoint: Checkpoint, accelerator: Any, model: Any) -> None:
        """Copy the checkpoint's trainable weights into `model` (every rank)."""
        if _sharded(accelerator):
            return  # restored together with the optimizer by `load_training_state`
        from safetensors.torch import load_file

        with _clear_load_errors(checkpoint.path / "trainable.safetensors"):
            saved = load_file(str(checkpoint.path / "trainable.safetensors"))
        params = dict(trainable_parameters(accelerator.unwrap_model(model)))
        if set(saved) != set(params):
            raise CloError(f"checkpoint {checkpoint.path} holds different trainable weights than this model",
                           hint=f"delete {checkpoint.path.parent} to start afresh")
        import torch

        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))

    @staticmethod
    def load_training_state(checkpoint: Checkpoint, accelerator: Any, optimizer: Any, scheduler: Any) -> None:
        """Optimizer, scheduler and random state, to continue a phase exactly where it stopped."""
        import torch

        if _sharded(accelerator):
            accelerator.load_state(str(checkpoint.path))
        else:
            with _clear_load_errors(checkpoint.path / "optimizer.pt"):
                optimizer_state = torch.load(checkpoint.path / "optimizer.pt", map_location="cpu", weights_only=True)
            with _clear_load_errors(checkpoint.path / "scheduler.pt"):
                scheduler_state = torch.load(checkpoint.path / "scheduler.pt", weights_only=True)
            optimizer.load_state_dict(optimizer_state)
            scheduler.load_state_dict(scheduler_state)
        rng_file = checkpoint.path / f"rng-{accelerator.process_index}.pt"
        if rng_file.exists():
            with _clear_load_errors(rng_file):
                rng = torch.load(rng_file, weights_only=False)
            random.setstate(rng["python"])
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


def trainable_parameters(model: Any) -> list[tuple[str, Any]]:
    return [(name, param) for name, param in model.named_parameters() if param.requires_grad]


def _listing(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()}


def _missing_or_short(folder: Path, files: dict[str, int] | None) -> tuple[Path, str] | None:
    """(file, what is wrong) for the first file that is not as saved; None when all are (or the
    checkpoint predates the listing)."""
    for name, size in (files or {}).items():
        path = folder / name
        if not path.is_file():
            return path, "missing"
        if path.stat().st_size != size:
            return path, f"cut short ({path.stat().st_size} of {size} bytes)"
    return None


@contextmanager
def _clear_load_errors(path: Path) -> Iterator[None]:
    """A file that passed the size check but does not load (damaged in place): name it."""
    try:
        yield
    except CloError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors, pickle and zip errors alike
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise CloError(f"checkpoint file {path} does not load: {first}",
                       hint=f"delete {path.parent} and run again to resume from the checkpoint before it") from None
