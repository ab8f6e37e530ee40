"""Checkpoints inside the train stage's work folder, and resuming from the newest one.

    <work_dir>/checkpoints/<phase>-step-000050/
        trainable.safetensors   only the weights that train (attention projections or LoRA)
        optimizer.pt  scheduler.pt  rng-<rank>.pt
        state.json              phase, step, steps of the phase, recipe identity

Writes go to a temporary folder renamed into place, so a crash mid-save never leaves a
checkpoint that looks complete. The two newest are kept. `identity` is a hash of every
recipe value training reads: a folder written by a different recipe is refused rather than
resumed. With FSDP or DeepSpeed the sharded state is saved through accelerate instead.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CloError

KEEP = 2


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

    def all(self) -> list[Checkpoint]:
        found = []
        for state_file in self.folder.glob("*-step-*/state.json"):
            state = json.loads(state_file.read_text())
            if state.get("identity") != self.identity:
                raise CloError(
                    f"checkpoint {state_file.parent} was written by a different recipe",
                    hint=f"delete {self.folder} (or run with --force) to start this training afresh",
                )
            if state["phase"] in self.phases:
                found.append(Checkpoint(state_file.parent, state["phase"], state["step"], state["phase_steps"]))
        return sorted(found, key=lambda c: (self.phases.index(c.phase), c.step))

    def latest(self) -> Checkpoint | None:
        found = self.all()
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
            state = {"phase": phase, "step": step, "phase_steps": phase_steps, "identity": self.identity}
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
            optimizer.load_state_dict(torch.load(checkpoint.path / "optimizer.pt", map_location="cpu", weights_only=True))
            scheduler.load_state_dict(torch.load(checkpoint.path / "scheduler.pt", weights_only=True))
        rng_file = checkpoint.path / f"rng-{accelerator.process_index}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=False)
            random.setstate(rng["python"])
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


def trainable_parameters(model: Any) -> list[tuple[str, Any]]:
    return [(name, param) for name, param in model.named_parameters() if param.requires_grad]
