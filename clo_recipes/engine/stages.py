"""The stage table: what each stage kind runs and which recipe values it reads.

`reads` names top-level sections (`model`) or single fields (`train.max_length`). The stage
sees only these (see `view.RecipeView`) and its fingerprint hashes exactly these, its
upstream fingerprints and its `version`. Bump `version` when a stage's code changes what it
writes, so finished stages of older runs are redone instead of silently reused.

`checks` are the stage's own cross-checks of the recipe, each `(field, "module:function")`:
the function takes the resolved recipe and raises when the stage could not run it (a
translator without the language, an unknown lm-eval task). The engine runs them at plan time
and blames `field`, so the recipe layer needs to know nothing of the stages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    kind: str
    module: str  # imported only when the stage runs: plan/validate never import torch
    reads: tuple[str, ...]
    version: int
    summary: str
    checks: tuple[tuple[str, str], ...] = ()  # imported at plan time: torch-free modules only


# Values that change numerics of a forward pass (and so reference log-probs and evaluation).
_NUMERICS = ("hardware.precision", "hardware.quantization", "hardware.attention")

# NF4 needs a 4-bit backend: checked at plan time, blamed on the field that asked for it.
_QUANTIZATION = (("adapter.kind", "clo_recipes.hardware.detect:check_quantization"),)

SPECS: dict[str, StageSpec] = {
    spec.kind: spec
    for spec in (
        StageSpec("source", "clo_recipes.stages.source", ("data",), 1,
                  "read, clean and sample the English SFT data"),
        StageSpec("translate", "clo_recipes.stages.translate", ("language", "translation"), 1,
                  "translate queries and answers, filter bad translations",
                  checks=(("translation.model", "clo_recipes.translation.support:check_recipe"),)),
        StageSpec("pairs", "clo_recipes.stages.pairs", ("language", "model"), 1,
                  "build CLO quadruples and SFT sets"),
        StageSpec("reference", "clo_recipes.stages.reference",
                  ("model", "method", "adapter", "train.max_length", *_NUMERICS), 1,
                  "precompute frozen reference log-probs", checks=_QUANTIZATION),
        StageSpec("train", "clo_recipes.stages.train",
                  ("model", "language", "method", "adapter", "train", "hardware"), 1,
                  "train the model", checks=_QUANTIZATION),
        StageSpec("evaluate", "clo_recipes.stages.evaluate",
                  ("model", "language", "eval", "train.max_length", *_NUMERICS), 1,
                  "generate answers and score them",
                  checks=(("eval.lm_eval_tasks", "clo_recipes.evaluation.lm_eval_bridge:check_recipe"),)),
        StageSpec("judge", "clo_recipes.stages.judge", ("language", "eval.judge"), 1,
                  "pairwise LLM-judge win rates"),
        StageSpec("report", "clo_recipes.stages.report", ("name", "language", "method", "eval"), 1,
                  "report.json, report.md and plots"),
    )
}

STAGE_ORDER = tuple(SPECS)
