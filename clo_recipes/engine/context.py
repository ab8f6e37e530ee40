"""What a stage function receives. Stages are plain functions `run(ctx) -> dict`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator


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


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines (UTF-8, not ASCII-escaped); returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
