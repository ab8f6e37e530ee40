"""Turn a resolved recipe into an ordered stage graph with fingerprints and status.

Stages that do not apply are left out (no `reference` for SFT). Each train arm (the recipe's
method and every `method.baselines` entry) gets its own train and evaluate stage, so the
paper's CLO-vs-SFT comparison is one run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_ref import PYPI_PREFIX, locate_model
from ..recipe.resolve import Resolved
from .checks import check_stages
from .fingerprint import DigestCache, stable_hash, tree_digest
from .stages import SPECS, StageSpec
from .store import RunStore
from .view import RecipeView


@dataclass
class PlannedStage:
    id: str
    spec: StageSpec
    arm: str | None
    deps: list[str]
    view: RecipeView
    fingerprint: str = ""
    status: str = "pending"  # done | partial | pending

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass
class Plan:
    resolved: Resolved
    stages: list[PlannedStage]
    store: RunStore
    cache_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    def stage(self, stage_id: str) -> PlannedStage:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    def stage_dir(self, stage: PlannedStage) -> Path:
        return self.store.stage_dir(stage.id, stage.fingerprint)


def cache_dir_for(resolved: Resolved) -> Path:
    configured = resolved.recipe.cache_dir or os.environ.get("CLO_RECIPES_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "clo-recipes"


def arms_of(resolved: Resolved) -> list[str]:
    method = resolved.recipe.method
    return list(dict.fromkeys([method.name, *method.baselines]))


def _for_arm(kind: str, arm: str) -> bool:
    """The stage table says which methods' arms get a stage of this kind (`for_methods`)."""
    methods = SPECS[kind].for_methods
    return methods is None or arm in methods


def _stage_list(resolved: Resolved) -> list[tuple[str, str, str | None, list[str]]]:
    """(id, kind, arm, deps) in execution order."""
    stages = [("source", "source", None, []), ("translate", "translate", None, ["source"]),
              ("pairs", "pairs", None, ["translate"])]
    arms = arms_of(resolved)
    referenced = [arm for arm in arms if _for_arm("reference", arm)]
    for arm in referenced:
        stages.append((f"reference-{arm}", "reference", arm, ["pairs"]))
    for arm in arms:
        deps = ["pairs"] + ([f"reference-{arm}"] if arm in referenced else [])
        stages.append((f"train-{arm}", "train", arm, deps))
    evaluations = ["evaluate-base"] + [f"evaluate-{arm}" for arm in arms]
    stages.append(("evaluate-base", "evaluate", "base", ["pairs"]))
    for arm in arms:
        stages.append((f"evaluate-{arm}", "evaluate", arm, ["pairs", f"train-{arm}"]))
    report_deps = ["translate", *evaluations]  # the report shows the translation's numbers too
    if "judge" in resolved.recipe.eval.suites:
        stages.append(("judge", "judge", None, evaluations))
        report_deps.append("judge")
    stages.append(("report", "report", None, report_deps))
    return stages


def _content_identity(value: Any, digests: DigestCache) -> Any:
    """Replace local file/folder paths (and pypi: models) inside read values by content digests."""
    if isinstance(value, dict):
        return {k: _content_identity(v, digests) for k, v in value.items()}
    if isinstance(value, list):
        return [_content_identity(v, digests) for v in value]
    if isinstance(value, str):
        if value.startswith(PYPI_PREFIX):
            location = locate_model(value)
            return {"package": location.package, "files": tree_digest(location.files(), None, digests)}
        if value.startswith("/") and "\n" not in value:
            path = Path(value)
            if path.is_file():
                return {"file": path.name, "sha256": digests.digest(path)}
            if path.is_dir():
                files = [p for p in path.rglob("*") if p.is_file()]
                return {"folder": path.name, "sha256": tree_digest(files, path, digests)}
    return value


def make_plan(resolved: Resolved) -> Plan:
    recipe = resolved.recipe
    cache_dir = cache_dir_for(resolved)
    store = RunStore(Path(recipe.output_dir).expanduser().resolve() / recipe.name)
    digests = DigestCache(cache_dir / "file-digests.json")
    stages: list[PlannedStage] = []
    by_id: dict[str, PlannedStage] = {}
    stage_list = _stage_list(resolved)
    notes = check_stages(resolved, [kind for _, kind, _, _ in stage_list])
    for stage_id, kind, arm, deps in stage_list:
        spec = SPECS[kind]
        replacements = {}
        if arm not in (None, "base"):
            replacements["method"] = recipe.method.model_copy(update={"name": arm, "baselines": []})
        view = RecipeView(recipe, spec.reads, replacements)
        payload = {
            "kind": kind,
            "version": spec.version,
            "arm": arm,
            "reads": _content_identity(view.values(), digests),
            "upstream": {dep: by_id[dep].fingerprint for dep in deps},
        }
        stage = PlannedStage(stage_id, spec, arm, deps, view, stable_hash(payload))
        if store.is_done(stage.id, stage.fingerprint):
            stage.status = "done"
        elif store.partial_dir(stage.id, stage.fingerprint).exists():
            stage.status = "partial"
        stages.append(stage)
        by_id[stage_id] = stage
    digests.save()
    return Plan(resolved, stages, store, cache_dir, notes)
