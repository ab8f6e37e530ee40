"""What a stage function receives. Stages are plain functions `run(ctx) -> dict`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import read_jsonl, write_jsonl  # noqa: F401 - stages import them from here


@dataclass
class StageContext:
    """Everything one stage may use.

    `recipe` exposes only the recipe values the stage declared in its `StageSpec.reads`
    (anything else raises AttributeError), so the fingerprint always covers what it read.
    """

    stage_id: str  # e.g. "train-clo"
    kind: str  # e.g. "train"
    arm: str | None  # "clo" / "sft" / "sft+dpo" for reference/train/evaluate, "base" for the untrained model
    work_dir: Path  # write outputs here; survives a crash so long stages can resume from it
    recipe: Any  # RecipeView
    inputs: dict[str, Path]  # upstream stage id -> its finished directory
    run_dir: Path
    cache_dir: Path  # shared across runs (translation cache, judge cache, hashes)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("clo_recipes"))
    options: dict[str, Any] = field(default_factory=dict)  # CLI flags a stage may honour (e.g. force)

    @property
    def show_progress(self) -> bool:
        """Progress bars on, unless the run was started with the option `quiet`."""
        return not self.options.get("quiet", False)

    def input(self, kind: str) -> Path:
        """The one finished upstream directory of this kind (e.g. ``ctx.input("pairs")``)."""
        found = [path for stage_id, path in self.inputs.items() if stage_id.split("-", 1)[0] == kind]
        if len(found) != 1:
            raise KeyError(f"stage {self.stage_id} has {len(found)} upstream '{kind}' stages: {sorted(self.inputs)}")
        return found[0]
