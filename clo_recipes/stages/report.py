"""Report stage: `report.json`, `report.md`, the self-contained `report.html` and PNG plots
from every evaluate folder of the run, the judge's verdicts, the translate stage's samples and
the train stages' metrics.jsonl (see `evaluation/report.py` for the layout)."""

from __future__ import annotations

import json
from pathlib import Path

from clo_recipes.engine.context import StageContext, read_jsonl
from clo_recipes.engine.store import FP_CHARS, MANIFEST


def _manifest(folder: Path) -> dict:
    """A stage folder's manifest; {} for a folder without one (hand-made inputs in tests)."""
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def upstream(folder: Path, kind: str) -> Path | None:
    """The finished folder of the stage `folder`'s manifest names as its `kind` input (e.g. an
    evaluate stage's train stage): the train and reference stages are not the report's own
    inputs, they are reached through the evaluations that used them."""
    manifest = _manifest(folder)
    for stage_id, fingerprint in manifest.get("inputs", {}).items():
        found = folder.parent / f"{stage_id}-{fingerprint[:FP_CHARS]}"
        if stage_id.split("-", 1)[0] == kind and (found / MANIFEST).is_file():
            return found
    return None


def training_of(evaluate_dirs: dict[str, Path]) -> dict[str, dict]:
    """Per trained model: its curves from metrics.jsonl, with the reference stage's mean
    log-probs for preference arms."""
    from clo_recipes.evaluation.report_data import training_curves

    out = {}
    for label, folder in evaluate_dirs.items():
        train = upstream(folder, "train")
        if train is None or not (train / "metrics.jsonl").is_file():
            continue
        reference = upstream(train, "reference")
        means = (json.loads((reference / MANIFEST).read_text(encoding="utf-8"))["outputs"].get("mean_logps")
                 if reference is not None else None)
        out[label] = training_curves(list(read_jsonl(train / "metrics.jsonl")), means)
    return out


def run(ctx: StageContext) -> dict:
    from clo_recipes.evaluation.report import build_report, pick_examples, write_report
    from clo_recipes.evaluation.report_data import answer_rows, key_settings, translation_samples

    evaluations: dict[str, dict] = {}
    evaluate_dirs: dict[str, Path] = {}
    answers: dict[str, list[dict]] = {}
    judge = None
    translation = samples = None
    versions: dict = {}
    for stage_id, folder in sorted(ctx.inputs.items()):
        kind = stage_id.split("-", 1)[0]
        if kind == "translate":
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            translation = manifest.get("outputs")
            versions = manifest.get("versions") or versions
            kept = [row for name in ("translated.jsonl", "eval_translated.jsonl") if (folder / name).is_file()
                    for row in read_jsonl(folder / name)]
            dropped = list(read_jsonl(folder / "dropped.jsonl")) if (folder / "dropped.jsonl").is_file() else []
            samples = translation_samples(kept, dropped)
        elif kind == "evaluate":
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            evaluations[metrics["model"]] = metrics
            evaluate_dirs[metrics["model"]] = folder
            versions = _manifest(folder).get("versions") or versions
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
        judge_settings={"backend": settings.judge.backend, "endpoint": settings.judge.endpoint,
                        "model": settings.judge.model, "api_key_env": settings.judge.api_key_env,
                        "baseline": settings.judge.baseline},
        translation=translation,
        # the page's further parts (report.html and report.md render both from this document)
        answers=answer_rows(answers, ctx.recipe.language),
        training=training_of(evaluate_dirs),
        translation_samples=samples,
        settings=key_settings(ctx.recipe),
        versions=versions,
    )
    written = write_report(report, ctx.work_dir)
    return {"files": [path.name for path in written], "models": list(report["models"]),
            "html_bytes": (ctx.work_dir / "report.html").stat().st_size,
            "skipped": [f"{entry['suite']}: {entry['reason']}" for entry in report["skipped"]]}
