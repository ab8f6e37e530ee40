"""`train:` optimisation hyperparameters (docs/method.md: stand-ins close to the paper group's settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section

Tracker = Literal["none", "tensorboard", "wandb", "mlflow"]


class TrainSection(Section):
    epochs: float = Field(default=2, gt=0, description="Passes over the training pairs.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(default=8.0e-6, gt=0, description="Peak learning rate.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="Decay after warm-up."
    )
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    global_batch_size: int = Field(
        default=16,
        ge=1,
        description=(
            "Samples per optimizer step across all GPUs (one CLO sample = its two preference "
            "pairs). Micro batch and accumulation are derived from it and the world size."
        ),
    )
    max_length: int = Field(
        default=2048, ge=16, description="Longest prompt + answer in tokens; longer samples are dropped."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(
        default=42,
        description=(
            "Seed for initialisation-free randomness (shuffling, dropout). A sweep axis like any "
            "other (`--grid train.seed=1,2`); `compare` and `sweep` fold runs that differ only in "
            "seeds into one row: mean over seeds and their min-max."
        ),
    )
    save_steps: int = Field(default=50, ge=1, description="Checkpoint every N optimizer steps (for resume).")
    logging_steps: int = Field(default=1, ge=1, description="Log metrics every N optimizer steps.")
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["none"], description="Experiment trackers (through accelerate)."
    )
    merge: bool = Field(default=False, description="For LoRA: also write merged full weights.")
