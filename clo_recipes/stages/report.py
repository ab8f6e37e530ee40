"""Report stage: `report.json`, `report.md` and PNG plots from every evaluate folder of the
run and the judge's verdicts (see `evaluation/report.py` for the layout)."""

from __future__ import annotations

import json

from clo_recipes.engine.context import StageContext, read_jsonl


def run(ctx: StageContext) -> dict:
    from clo_recipes.evaluation.report import build_report, pick_examples, write_report

    evaluations: dict[str, dict] = {}
    answers: dict[str, list[dict]] = {}
    judge = None
    translation = None
    for stage_id, folder in sorted(ctx.inputs.items()):
        kind = stage_id.split("-", 1)[0]
        if kind == "translate":
            translation = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("outputs")
        elif kind == "evaluate":
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            evaluations[metrics["model"]] = metrics
            if (folder / "answers.jsonl").is_file():
                answers[metrics["model"]] = list(read_jsonl(folder / "answers.jsonl"))
        elif kind == "judge":
            judge = json.loads((folder / "judge.json").read_text(encoding="utf-8"))

    method = ctx.recipe.method
    settings = ctx.recipe.eval
    report = build_report(
        name=ctx.recipe.name,
        language=ctx.recipe.language,
        method=method.name,
        baselines=list(method.baselines),
        evaluations=evaluations,
        judge=judge,
        examples=pick_examples(answers, ctx.recipe.language, settings.examples),
        judge_settings={"endpoint": settings.judge.endpoint, "model": settings.judge.model,
                        "api_key_env": settings.judge.api_key_env, "baseline": settings.judge.baseline},
        translation=translation,
    )
    written = write_report(report, ctx.work_dir)
    return {"files": [path.name for path in written], "models": list(report["models"]),
            "skipped": [f"{entry['suite']}: {entry['reason']}" for entry in report["skipped"]]}
