"""Evaluate stage: one model (`evaluate-base` or `evaluate-<arm>`), every configured suite.

Writes into its folder:
- `answers.jsonl`: `{"id", "lang", "prompt", "answer", "answer_lang", "answer_lang_confidence"}`
  (greedy answers to the held-out prompts, in English and the target language; what the
  fidelity suite scores and the judge compares),
- `mc_details.jsonl`: per question, the option log-likelihoods and picks,
- `nll_details.jsonl`: per held-out pair and language, the reference answer's summed NLL and
  token count (what the `nll` suite averages; see `evaluation/nll.py`),
- `metrics.json`: `{"stage": "evaluate", "model", "language", "suites": {...}, "skipped": [...]}`.

Answers come from `eval.generation_backend` (the registry `recipe/generation_backends.py` names
how each opens: transformers in this process, a vLLM server this stage starts and stops, or the
user's endpoint; `auto` is chosen there too); `metrics.json` →
`generation` records which, and with what. Every answer is appended to
`answers.partial.jsonl` as it arrives, so an interrupted stage resumes where it stopped. A suite that cannot run here (lm-eval not installed, no built-in MC set for the
language) is recorded as skipped with its reason; the report shows it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from clo_recipes.engine.context import StageContext
from clo_recipes.files import JsonlAppender, read_jsonl, write_jsonl
from clo_recipes.evaluation.prompts import EvalPrompt, load_heldout_prompts, load_prompts_file

CHECKPOINT_EVERY = 32  # prompts per generation chunk written to the checkpoint


class _LoadedOnce:
    """The transformers model, loaded on first use and shared by generation, MC and lm-eval."""

    def __init__(self, ctx: StageContext, subject):
        self.ctx, self.subject, self.pair = ctx, subject, None

    def get(self):
        from dataclasses import replace

        from clo_recipes.evaluation.models import load_for_eval
        from clo_recipes.training.gguf_cache import plain_model_section

        if self.pair is None:
            hardware = self.ctx.recipe.hardware
            subject = replace(self.subject, section=plain_model_section(self.subject.section, self.ctx.cache_dir))
            self.pair = load_for_eval(subject, precision=hardware.precision, attention=hardware.attention,
                                      quantization=hardware.quantization)
        return self.pair


def run(ctx: StageContext) -> dict:
    from clo_recipes.evaluation.models import model_under_test

    settings = ctx.recipe.eval
    target = ctx.recipe.language
    trained = None if ctx.arm == "base" else ctx.input("train") / "model"
    subject = model_under_test(ctx.arm, ctx.recipe.model, trained)
    loaded = _LoadedOnce(ctx, subject)
    suites = set(settings.suites)
    timings: dict[str, float] = {}
    results: dict[str, dict] = {}
    skipped: list[dict] = []

    answers: list[dict] = []
    generation: dict = {}
    if suites & {"fidelity", "judge"}:
        prompts = _prompts(ctx, target)
        started = time.perf_counter()
        answers, generation = _generate_answers(ctx, subject, loaded, prompts)
        timings["generate_s"] = round(time.perf_counter() - started, 2)
        write_jsonl(ctx.work_dir / "answers.jsonl", answers)
        (ctx.work_dir / "answers.partial.jsonl").unlink(missing_ok=True)
        if "fidelity" in suites:
            from clo_recipes.evaluation.fidelity import fidelity_metrics

            results["fidelity"] = fidelity_metrics((row["lang"], row["answer_lang"]) for row in answers)

    wants_lm_eval = "lm_eval" in suites or bool(settings.lm_eval_tasks)
    if "nll" in suites:
        model, tokenizer = loaded.get()
        started = time.perf_counter()
        results["nll"] = _answer_likelihood(ctx, model, tokenizer, target)
        timings["nll_s"] = round(time.perf_counter() - started, 2)
    if "mc" in suites or wants_lm_eval:
        model, tokenizer = loaded.get()
        if "mc" in suites:
            started = time.perf_counter()
            results["mc"], mc_skipped = _multiple_choice(ctx, model, tokenizer, target)
            skipped += [{"suite": "mc", **entry} for entry in mc_skipped]
            timings["mc_s"] = round(time.perf_counter() - started, 2)
        if wants_lm_eval:
            started = time.perf_counter()
            outcome = _lm_eval(ctx, model, tokenizer)
            if "reason" in outcome:
                skipped.append({"suite": "lm_eval", "reason": outcome["reason"]})
            else:
                results["lm_eval"] = outcome
            timings["lm_eval_s"] = round(time.perf_counter() - started, 2)

    metrics = {
        "stage": "evaluate",
        "model": ctx.arm,
        "weights": subject.describe(),
        "language": target,
        "suites": results,
        "skipped": skipped,
        "timings": timings,
        "generation": generation,
    }
    (ctx.work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return _manifest_summary(metrics, len(answers))


def _prompts(ctx: StageContext, target: str) -> list[EvalPrompt]:
    settings = ctx.recipe.eval
    if settings.prompts:
        return load_prompts_file(Path(settings.prompts), target, settings.max_prompts)
    return load_heldout_prompts(ctx.input("pairs") / "eval.jsonl", target, settings.max_prompts)


def _generate_answers(ctx: StageContext, subject, loaded: _LoadedOnce, prompts: list[EvalPrompt]) -> list[dict]:
    """Answers for every prompt, resuming from the checkpoint of an interrupted attempt.

    Every answer is appended to the checkpoint as it arrives (a server's answers one by one,
    transformers' a batch at a time), so a failure or Ctrl-C loses only what was in flight."""
    from clo_recipes.evaluation.fidelity import detect_answer_languages
    from clo_recipes.evaluation.serving import generator_for
    from clo_recipes.evaluation.vllm_server import find_python
    from clo_recipes.recipe.generation_backends import choose

    settings = ctx.recipe.eval
    checkpoint = ctx.work_dir / "answers.partial.jsonl"
    done = {(row["id"], row["lang"], row["prompt"]): row
            for row in read_jsonl(checkpoint, torn_tail_ok=True)} if checkpoint.exists() else {}
    todo = [p for p in prompts if (p.id, p.lang, p.text) not in done]
    if done:
        ctx.log.info("evaluate: resuming, %d of %d answers already generated", len(prompts) - len(todo), len(prompts))
    backend = choose(settings.generation_backend, prompts=len(todo), server_python=find_python(settings.vllm.python),
                     break_even=settings.vllm.break_even_prompts)
    generation: dict = {"backend": backend.name, "requested": settings.generation_backend, "generated": len(todo),
                        "resumed": len(prompts) - len(todo)}
    if not todo:
        return [done[(p.id, p.lang, p.text)] for p in prompts], generation
    bar = _bar(ctx, len(prompts), "answers", unit="answer", initial=len(prompts) - len(todo))
    with JsonlAppender(checkpoint) as handle:  # cuts a line torn by a kill first
        def keep(prompt: EvalPrompt, text: str) -> None:
            ((code, confidence),) = detect_answer_languages([text])
            row = {"id": prompt.id, "lang": prompt.lang, "prompt": prompt.text, "answer": text,
                   "answer_lang": code, "answer_lang_confidence": round(confidence, 4)}
            done[(prompt.id, prompt.lang, prompt.text)] = row
            handle.write(row)
            handle.flush()

        started = time.perf_counter()
        with generator_for(ctx, subject, backend, loaded.get) as (generator, info):
            generation |= info
            serving_started = time.perf_counter()
            step = len(todo) if backend.streams else CHECKPOINT_EVERY  # a stream checkpoints each answer
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                generator.generate([p.text for p in chunk], progress=bar,
                                   on_answer=lambda index, text, chunk=chunk: keep(chunk[index], text))
                ctx.log.info("evaluate-%s: %d/%d answers", ctx.arm, len(done), len(prompts))
            generation["answer_s"] = round(time.perf_counter() - serving_started, 2)
        generation["wall_s"] = round(time.perf_counter() - started, 2)
    bar.close()
    return [done[(p.id, p.lang, p.text)] for p in prompts], generation


def _multiple_choice(ctx: StageContext, model, tokenizer, target: str) -> tuple[dict, list[dict]]:
    from clo_recipes.evaluation.multiple_choice import resolve_mc_sets, score_questions

    sets, skipped = resolve_mc_sets(ctx.recipe.eval.mc_sets, target)
    bar = _bar(ctx, sum(len(q.choices) for mc_set in sets for q in mc_set.questions), "multiple choice",
               unit="option")
    by_set: list[dict] = []
    totals: dict[str, list[int]] = {}  # lang -> [correct, correct_norm, n]
    detail_rows: list[dict] = []
    for mc_set in sets:
        scored = score_questions(model, tokenizer, mc_set.questions, batch_size=ctx.recipe.eval.batch_size,
                                 max_length=ctx.recipe.train.max_length, progress=bar)
        details = scored.pop("details")
        by_set.append({"set": mc_set.name, "lang": mc_set.lang, **scored})
        total = totals.setdefault(mc_set.lang, [0, 0, 0])
        total[0] += sum(d["pick"] == d["answer"] for d in details)
        total[1] += sum(d["pick_norm"] == d["answer"] for d in details)
        total[2] += len(details)
        detail_rows += [{"set": mc_set.name, "lang": mc_set.lang, **d} for d in details]
    bar.close()
    write_jsonl(ctx.work_dir / "mc_details.jsonl", detail_rows)
    by_language = {lang: {"acc": c / n, "acc_norm": cn / n, "n": n} for lang, (c, cn, n) in totals.items()}
    return {"by_language": by_language, "sets": by_set}, skipped


def _answer_likelihood(ctx: StageContext, model, tokenizer, target: str) -> dict:
    """The `nll` suite on the held-out pairs (the first `eval.max_prompts` of them)."""
    from clo_recipes.evaluation.nll import nll_suite

    rows = list(read_jsonl(ctx.input("pairs") / "eval.jsonl"))[: ctx.recipe.eval.max_prompts]
    bar = _bar(ctx, 2 * len(rows), "held-out answer NLL", unit="answer")
    metrics, details = nll_suite(model, tokenizer, rows, target, batch_size=ctx.recipe.eval.batch_size,
                                 max_length=ctx.recipe.train.max_length, progress=bar)
    bar.close()
    write_jsonl(ctx.work_dir / "nll_details.jsonl", details)
    return metrics


def _bar(ctx: StageContext, total: int, what: str, *, unit: str, initial: int = 0):
    from clo_recipes.progress import progress_bar

    return progress_bar(total, f"evaluate {ctx.arm}: {what}", unit=unit, initial=initial,
                        enabled=ctx.show_progress)


def _lm_eval(ctx: StageContext, model, tokenizer) -> dict:
    from clo_recipes.evaluation.lm_eval_bridge import EXTRA_HINT, lm_eval_installed, run_tasks

    tasks = ctx.recipe.eval.lm_eval_tasks
    if not tasks:
        return {"reason": "suite `lm_eval` is listed but `eval.lm_eval_tasks` names no task"}
    if not lm_eval_installed():
        return {"reason": f"lm-evaluation-harness is not installed ({EXTRA_HINT})"}
    return run_tasks(model, tokenizer, tasks, batch_size=ctx.recipe.eval.batch_size,
                     max_length=ctx.recipe.train.max_length, limit=ctx.recipe.eval.lm_eval_limit)


def _manifest_summary(metrics: dict, answers: int) -> dict:
    """Headline numbers for the stage manifest (the full metrics are in metrics.json)."""
    summary: dict = {"answers": answers, "skipped": [entry["suite"] for entry in metrics["skipped"]]}
    generation = metrics["generation"]
    if generation:
        summary["generation_backend"] = generation["backend"]
        for key in ("merged", "start_s"):
            if key in generation:
                summary[f"vllm_{key}"] = generation[key]
    for lang, values in metrics["suites"].get("fidelity", {}).items():
        summary[f"fidelity_{lang}"] = values["share"]
    for lang, values in metrics["suites"].get("mc", {}).get("by_language", {}).items():
        summary[f"mc_acc_{lang}"] = values["acc"]
    for lang, values in metrics["suites"].get("nll", {}).items():
        summary[f"nll_{lang}"] = values["nll"]
    return summary
