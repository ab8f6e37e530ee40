"""Test helpers: write a recipe from a dict, and build a real `StageContext` for stage tests
(planned through the door like every run; no CLI, no run-folder claim)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..engine.context import StageContext
from .door import prepare

# The minimum a recipe needs; tests override what they care about.
BASE_RECIPE: dict[str, Any] = {
    "name": "test",
    "language": "es",
    "model": {"base": "tiny-model"},
    "data": {"source": "data.jsonl"},
    "translation": {"backend": "memory", "memory_file": "memory.jsonl"},
    "hardware": "cpu",
}


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_recipe(recipe: dict[str, Any], folder: Path, name: str = "recipe.yaml") -> Path:
    """Write `BASE_RECIPE` merged with `recipe` as YAML into `folder` (paths resolve there)."""
    folder.mkdir(parents=True, exist_ok=True)
    merged = _merge(BASE_RECIPE, recipe)
    merged.setdefault("output_dir", str(folder / "runs"))
    merged.setdefault("cache_dir", str(folder / "cache"))
    path = folder / name
    path.write_text(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def make_context(recipe: dict[str, Any], stage_id: str, tmp_path: Path,
                 inputs: dict[str, Path] | None = None) -> StageContext:
    """A context for `stage_id` ("pairs", "train-clo", "evaluate-base", ...) of `recipe`
    (merged over `BASE_RECIPE`; relative paths resolve against `tmp_path`). `inputs` maps
    upstream stage ids to finished directories you prepared."""
    path = write_recipe(recipe, tmp_path)
    plan = prepare(path).plan
    stage = plan.stage(stage_id)
    work_dir = tmp_path / "work" / stage_id
    work_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(
        stage_id=stage.id,
        kind=stage.kind,
        arm=stage.arm,
        work_dir=work_dir,
        recipe=stage.view,
        inputs=dict(inputs or {}),
        run_dir=plan.run_dir,
        cache_dir=plan.cache_dir,
    )
