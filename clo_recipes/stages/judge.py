"""Judge stage: pairwise LLM-judge win rate of every evaluated model against a baseline.

The baseline (`eval.judge.baseline`) is `base`, an arm of this run (`sft`, ...) or another
run's directory (its trained model). Both models' answers to the same prompts are judged in
both orders (see `evaluation/judge.py`). Writes `judge.json`:
`{"status": "ok" | "skipped", "reason", "baseline", "judge_model", "models": {label: {lang:
{win_rate, low, high, n, wins, ties, losses, consistent}}}, "counters"}` and `judgments.jsonl`.

The judge's chat server comes from `eval.judge.backend` (the backend registry,
`recipe/generation_backends.py`): `endpoint` (a server at eval.judge.endpoint) or `vllm` (a
vLLM server this stage starts serving eval.judge.model, its log `vllm-server.log` in this
folder, stopped when the stage ends; `judge.json` records its start time).

A judge endpoint that cannot be used (no endpoint, API key missing, endpoint unreachable) never
fails the run: the stage records `skipped` with the reason and the report says so. A managed
server that does not start is an error (with its log's last lines). Verdicts already paid for
stay in the cache, so re-running after fixing the judge only asks for the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

from clo_recipes.engine.context import StageContext, read_jsonl, write_jsonl

CACHE_FILE = "judge-verdicts.sqlite"


def run(ctx: StageContext) -> dict:
    settings = ctx.recipe.eval.judge
    outcome = judge_models(ctx, settings)
    (ctx.work_dir / "judge.json").write_text(json.dumps(outcome, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    summary = {"status": outcome["status"]}
    if outcome["status"] == "skipped":
        summary["reason"] = outcome["reason"]
        ctx.log.warning("judge skipped: %s", outcome["reason"])
    else:
        summary |= outcome["counters"]
        for label, by_lang in outcome["models"].items():
            for lang, stats in by_lang.items():
                summary[f"win_rate_{label}_{lang}"] = stats["win_rate"]
    return summary


def _skipped(reason: str, settings) -> dict:
    return {"status": "skipped", "reason": reason, "backend": settings.backend, "baseline": settings.baseline,
            "judge_model": settings.model}


def judge_models(ctx: StageContext, settings) -> dict:
    from clo_recipes.evaluation.judge import Comparison, JudgeUnavailable, VerdictCache, judge_comparisons, win_rates
    from clo_recipes.evaluation.serving import judge_client_for
    from clo_recipes.recipe.languages import get_language

    answers = {label: list(read_jsonl(folder / "answers.jsonl")) for label, folder in _evaluations(ctx).items()}
    try:
        baseline_label, baseline_answers = _baseline(settings.baseline, answers)
    except LookupError as error:
        return _skipped(str(error), settings)
    by_key = {(row["id"], row["lang"], row["prompt"]): row["answer"] for row in baseline_answers}
    compared: dict[str, list] = {}
    for label, rows in answers.items():
        if label == baseline_label:
            continue
        compared[label] = [Comparison(row["id"], row["lang"], row["prompt"], row["answer"], by_key[key])
                           for row in rows if (key := (row["id"], row["lang"], row["prompt"])) in by_key]
        if not compared[label]:
            return _skipped(f"model '{label}' and baseline '{baseline_label}' share no prompt", settings)

    target = ctx.recipe.language
    names = {"en": "English", target: get_language(target).name}
    models: dict[str, dict] = {}
    counters = {"requests": 0, "cached": 0, "identical": 0, "unreadable": 0, "too_long": 0}
    all_records: list[dict] = []
    cache = VerdictCache(ctx.cache_dir / CACHE_FILE)
    try:
        # Opened only now that there is something to judge: a managed server starts here and
        # stops when the block ends (also on error and Ctrl-C).
        with judge_client_for(ctx, settings) as (client, judge_info):
            for label, comparisons in compared.items():
                records, counts = judge_comparisons(comparisons, client, cache, names,
                                                    concurrency=settings.concurrency)
                models[label] = win_rates(records)
                all_records += [{"model": label, "baseline": baseline_label, **record} for record in records]
                for key, value in counts.items():
                    counters[key] += value
    except JudgeUnavailable as error:
        return _skipped(str(error), settings)
    finally:
        cache.close()
    write_jsonl(ctx.work_dir / "judgments.jsonl", all_records)
    return {"status": "ok", "baseline": baseline_label, "judge_model": settings.model,
            "endpoint": settings.endpoint, **judge_info, "models": models, "counters": counters}


def _evaluations(ctx: StageContext) -> dict[str, Path]:
    """Model label -> evaluate folder of this run (from each folder's metrics.json)."""
    found = {}
    for stage_id, folder in sorted(ctx.inputs.items()):
        if stage_id.split("-", 1)[0] == "evaluate" and (folder / "answers.jsonl").is_file():
            found[json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["model"]] = folder
    return found


def _baseline(name: str, answers: dict[str, list[dict]]) -> tuple[str, list[dict]]:
    """The baseline's label and answers: a model of this run, or another run's trained model."""
    if name in answers:
        return name, answers[name]
    path = Path(name).expanduser()
    if path.is_dir():
        from clo_recipes.errors import CloError
        from clo_recipes.evaluation.runs import load_run

        try:
            other = load_run(path)
            label = other.main_model()
        except CloError as error:
            raise LookupError(f"baseline run {path}: {error.problems[0].message}") from None
        rows = other.answers(label)
        if not rows:
            raise LookupError(f"baseline run {path} has no answers for its model '{label}'")
        return f"{other.name}:{label}", rows
    raise LookupError(
        f"baseline '{name}' is not evaluated in this run (evaluated: {', '.join(sorted(answers))}); "
        "add it to method.baselines or set eval.judge.baseline to one of those or to a run directory"
    )
