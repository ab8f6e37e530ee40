"""Stage `train`: one method arm (clo, sft or sft+dpo) on the pairs stage's quadruples.

Writes `model/` (full weights or a LoRA adapter, safetensors, plus the tokenizer; loadable
with plain transformers/peft), `merged/` for LoRA with `train.merge`, `metrics.jsonl` (one
line per logged step), `chat_check.json` (the first sample as rendered for training) and,
for sft+dpo, `reference-dpo.jsonl`. Checkpoints live in `checkpoints/` while it runs: the
engine re-runs an unfinished stage in the same folder, which resumes from the newest one.
"""

from __future__ import annotations

from clo_recipes.engine.context import StageContext, read_jsonl


def run(ctx: StageContext) -> dict:
    from clo_recipes.training.gguf_cache import plain_model_section
    from clo_recipes.training.loop import TrainJob, run_training
    from clo_recipes.training.reference import REFERENCE_FILE

    recipe = ctx.recipe
    job = TrainJob(
        arm=ctx.arm,
        model=plain_model_section(recipe.model, ctx.cache_dir),
        method=recipe.method,
        adapter=recipe.adapter,
        train=recipe.train,
        hardware=recipe.hardware,
        rows=list(read_jsonl(ctx.input("pairs") / "train.jsonl")),
        work_dir=ctx.work_dir,
        identity={"stage": ctx.stage_id, "recipe": recipe.values(), "inputs": sorted(p.name for p in ctx.inputs.values())},
        # the planner gives an arm a reference stage when its method needs one (stage table)
        reference_file=ctx.input("reference") / REFERENCE_FILE if _has_reference(ctx) else None,
        project=ctx.run_dir.name,
        show_progress=ctx.show_progress,
    )
    return run_training(job)


def _has_reference(ctx: StageContext) -> bool:
    return any(stage_id.split("-", 1)[0] == "reference" for stage_id in ctx.inputs)
