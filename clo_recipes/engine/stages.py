"""The stage table: what each stage kind runs and which recipe values it reads.

`reads` names top-level sections (`model`) or single fields (`train.max_length`). The stage
sees only these (see `view.RecipeView`) and its fingerprint hashes exactly these, its
upstream fingerprints and its `version`. Bump `version` when a stage's code changes what it
writes, so finished stages of older runs are redone instead of silently reused.

`checks` are the stage's own cross-checks of the recipe, each `(field, "module:function")`:
the function takes the resolved recipe and raises when the stage could not run it (a
translator without the language, an unknown lm-eval task). The engine runs them at plan time
and blames `field`, so the recipe layer needs to know nothing of the stages.

The rest are the stage's properties as data, read by the planner, the launcher, sweep reuse
and bundles (none of them tests a kind by name):
- `data`: a data stage (source, translate, pairs): runs once on machine 0, is what a bundle
  seeds a new run with;
- `launched`: runs on every process of a multi-process launch (the model passes);
- `for_methods`: planned only for the train arms of these methods (None: not per arm, or
  every arm): CLO needs precomputed reference log-probs; SFT none; sft+dpo computes its
  own after its SFT phase, inside train;
- `exports`: the files (a trailing "/" for a folder) later stages, reuse and bundles read by
  name; everything else in the folder is the stage's own (logs, checkpoints).
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
    data: bool = False
    launched: bool = False
    for_methods: tuple[str, ...] | None = None
    exports: tuple[str, ...] = ()


# Files named by more than one layer.
REFERENCE_FILE = "reference.jsonl"  # per-sample reference log-probs
MODEL_DIR = "model/"  # the trained model (weights, tokenizer, config) of a train stage

# Values that change numerics of a forward pass (and so reference log-probs and evaluation).
_NUMERICS = ("hardware.precision", "hardware.quantization", "hardware.attention")

# NF4 needs a 4-bit backend: checked at plan time, blamed on the field that asked for it.
_QUANTIZATION = (("adapter.kind", "clo_recipes.hardware.detect:check_quantization"),)
# bf16 on a CPU needs bf16 instructions: checked at plan time by every stage that runs the model.
_PRECISION = (("hardware.precision", "clo_recipes.hardware.detect:check_precision"),)

SPECS: dict[str, StageSpec] = {
    spec.kind: spec
    for spec in (
        StageSpec("source", "clo_recipes.stages.source", ("data",), 1,
                  "read, clean and sample the English SFT data",
                  data=True, exports=("samples.jsonl", "eval_samples.jsonl")),
        StageSpec("translate", "clo_recipes.stages.translate", ("language", "translation"), 1,
                  "translate queries and answers, filter bad translations",
                  checks=(("translation.model", "clo_recipes.translation.coverage:check_recipe"),),
                  data=True, exports=("translated.jsonl", "eval_translated.jsonl", "dropped.jsonl")),
        StageSpec("pairs", "clo_recipes.stages.pairs", ("language", "model"), 1,
                  "build CLO quadruples and SFT sets",
                  data=True, exports=("train.jsonl", "eval.jsonl")),
        StageSpec("reference", "clo_recipes.stages.reference",
                  ("model", "method", "adapter", "train.max_length", *_NUMERICS), 1,
                  "precompute frozen reference log-probs", checks=_QUANTIZATION + _PRECISION,
                  launched=True, for_methods=("clo",), exports=(REFERENCE_FILE,)),
        StageSpec("train", "clo_recipes.stages.train",
                  ("model", "language", "method", "adapter", "train", "hardware"), 1,
                  "train the model", checks=_QUANTIZATION + _PRECISION,
                  launched=True, exports=(MODEL_DIR, "metrics.jsonl")),
        StageSpec("evaluate", "clo_recipes.stages.evaluate",
                  ("model", "language", "eval", "train.max_length", *_NUMERICS), 1,
                  "generate answers and score them",
                  checks=(*_PRECISION, ("eval.lm_eval_tasks", "clo_recipes.evaluation.lm_eval_bridge:check_recipe"),
                          ("eval.generation_backend", "clo_recipes.evaluation.backend_checks:check_recipe"),
                          ("eval.vllm.args", "clo_recipes.evaluation.backend_checks:check_lora_rank")),
                  exports=("metrics.json", "answers.jsonl")),
        # eval.vllm, the precision and the answers' length: a managed judge server
        # (eval.judge.backend: vllm) serves with them (its CPU KV cache holds two answers a request)
        StageSpec("judge", "clo_recipes.stages.judge",
                  ("language", "eval.judge", "eval.vllm", "eval.max_new_tokens", "hardware.precision"), 1,
                  "pairwise LLM-judge win rates",
                  checks=(("eval.judge.model", "clo_recipes.evaluation.backend_checks:check_judge"),),
                  exports=("judgments.jsonl",)),
        # model/data/translation/adapter/train: the key settings report.html shows
        StageSpec("report", "clo_recipes.stages.report",
                  ("name", "language", "method", "eval", "model", "data", "translation", "adapter", "train"), 2,
                  "report.json, report.md, report.html and plots",
                  exports=("report.json", "report.md", "report.html")),
    )
}

STAGE_ORDER = tuple(SPECS)
DATA_KINDS = tuple(kind for kind, spec in SPECS.items() if spec.data)
