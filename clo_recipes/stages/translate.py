"""Translate stage: the source stage's queries and answers into the target language.

Reads `samples.jsonl` and `eval_samples.jsonl` of the source stage; translates every distinct
text once (through `clo_recipes.translation`: segmenting, the shared SQLite cache at
`<cache_dir>/translations.sqlite`, length-grouped batches), then applies the quality filters.

Writes:
- `translated.jsonl` / `eval_translated.jsonl`: `{"id", "prompt", "response", "prompt_l",
  "response_l"}` for the samples that passed every filter, plus, with `translation.round_trip`,
  `"round_trip_chrf": {"prompt": .., "response": ..}` (see `translation/round_trip.py`);
- `dropped.jsonl`: `{"id", "split", "reason", "field", "detail", "prompt", "response",
  "prompt_l", "response_l"}`, one line per dropped sample (its first failing check).
Returns counts per split and per drop reason, the translation's own numbers (segments,
cache hits, throughput) and, with `round_trip`, the chrF distribution and the back-translation's
numbers. An interrupted stage loses nothing: finished batches of both directions are cached.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console

from clo_recipes.engine.context import StageContext, read_jsonl, write_jsonl
from clo_recipes.errors import StageError
from clo_recipes.recipe.languages import get_language
from clo_recipes.translation.backends import build_translator
from clo_recipes.translation.cache import TranslationCache
from clo_recipes.translation.filters import REASONS, Verdict, check_translation
from clo_recipes.translation.pipeline import TranslationStats, translate_texts
from clo_recipes.translation.round_trip import round_trip_chrf, sample_score, summarise

SOURCE_LANGUAGE = "en"
DROP_REASONS = (*REASONS, "round_trip")
SPLITS = (("train", "samples.jsonl", "translated.jsonl"), ("eval", "eval_samples.jsonl", "eval_translated.jsonl"))


def run(ctx: StageContext) -> dict:
    section = ctx.recipe.translation
    target = get_language(ctx.recipe.language).iso1
    source_dir = ctx.input("source")
    splits = {name: list(read_jsonl(source_dir / file)) for name, file, _ in SPLITS if (source_dir / file).is_file()}
    texts = list(dict.fromkeys(row[field] for rows in splits.values() for row in rows
                               for field in ("prompt", "response")))
    progress = None if ctx.show_progress else False  # None: a bar on a terminal only
    with TranslationCache(ctx.cache_dir / "translations.sqlite") as cache:
        translations, stats = _translate(section, texts, SOURCE_LANGUAGE, target, cache, progress)
        translated = dict(zip(texts, translations))
        back: dict[str, str] = {}
        back_stats = None
        if section.round_trip:
            outputs = list(dict.fromkeys(text for text in translations if text.strip()))
            back_translations, back_stats = _translate(section, outputs, target, SOURCE_LANGUAGE, cache, progress)
            back = dict(zip(outputs, back_translations))

    reasons: Counter = Counter()
    dropped: list[dict] = []
    counts: dict[str, int] = {}
    scores: list[float] = []  # of the samples that passed the other filters
    for name, _, out_file in SPLITS:
        kept = []
        for row in splits.get(name, []):
            out = {**row, "prompt_l": translated[row["prompt"]], "response_l": translated[row["response"]]}
            failure = _first_failure(out, target, section.filters)
            if failure is None and section.round_trip:
                failure = _round_trip_failure(out, back, section.filters.min_round_trip_chrf, scores)
            if failure is None:
                kept.append(out)
            else:
                field, verdict = failure
                reasons[verdict.reason] += 1
                dropped.append({"id": row["id"], "split": name, "reason": verdict.reason, "field": field,
                                "detail": verdict.detail, **{k: out[k] for k in ("prompt", "response", "prompt_l", "response_l",
                                                                   "round_trip_chrf") if k in out}})
        counts[name] = write_jsonl(ctx.work_dir / out_file, kept)
    write_jsonl(ctx.work_dir / "dropped.jsonl", dropped)
    round_trip = None
    if back_stats is not None:
        round_trip = {**summarise(scores, section.filters.min_round_trip_chrf, reasons["round_trip"]),
                      "translation": back_stats.as_dict()}
    if ctx.show_progress:
        Console(soft_wrap=True).print(_summary_line(target, stats, counts, reasons, round_trip),
                                        markup=False, highlight=False)
    if splits.get("train") and not counts["train"]:
        raise StageError(f"every translated training sample was dropped by the quality filters: {dict(reasons)}",
                         hint="inspect dropped.jsonl; a wrong translation.model or language shows up as 'language' drops")
    return {
        "language": target,
        "backend": section.backend,
        "model": section.model or section.memory_file,
        "translated": counts["train"],
        "eval_translated": counts["eval"],
        "dropped": len(dropped),
        "dropped_by_reason": {reason: reasons[reason] for reason in DROP_REASONS},
        "translation": stats.as_dict(),
        "round_trip": round_trip,
    }


def _translate(section, texts: list[str], src: str, tgt: str, cache: TranslationCache,
               progress: bool | None) -> tuple[list[str], TranslationStats]:
    """One direction with its own translator (few-shot examples follow the direction), closed
    before the next direction loads."""
    translator = build_translator(section, src=src, tgt=tgt)
    try:
        return translate_texts(texts, translator, src=src, tgt=tgt, cache=cache,
                               max_segment_chars=section.max_segment_chars, progress=progress)
    finally:
        translator.close()


def _round_trip_failure(row: dict, back: dict[str, str], threshold: float,
                        scores: list[float]) -> tuple[str, Verdict] | None:
    """Scores the sample into `row["round_trip_chrf"]` (and `scores`); the failing field, if any."""
    fields = {field: round_trip_chrf(row[field], back.get(row[f"{field}_l"], "")) for field in ("prompt", "response")}
    row["round_trip_chrf"] = fields
    score = sample_score(fields)
    if score is None:
        return None
    scores.append(score)
    if score >= threshold:
        return None
    field = min((f for f in fields if fields[f] is not None), key=lambda f: fields[f])
    shown = back.get(row[f"{field}_l"], "")
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    return field, Verdict("round_trip", f"round-trip chrF {score:.1f} below {threshold:g}; back: {shown!r}")


def _summary_line(target: str, stats: TranslationStats, counts: dict[str, int], reasons: Counter,
                  round_trip: dict | None) -> str:
    """What the console shows after the stage: count, speed, drops per filter, round-trip chrF."""
    numbers = stats.as_dict()
    drops = ", ".join(f"{reason} {reasons[reason]}" for reason in DROP_REASONS if reasons[reason]) or "none"
    speed = f", {numbers['segments_per_second']} seg/s" if stats.translated else ""
    line = (f"  translate en→{target}: {stats.texts} texts, {stats.unique_segments} unique segments "
            f"({stats.cached} cached, {stats.translated} translated{speed}); "
            f"kept {counts.get('train', 0)} train + {counts.get('eval', 0)} eval; dropped: {drops}")
    if round_trip:
        if round_trip["count"]:
            line += (f"\n  round trip {target}→en chrF: mean {round_trip['mean']:.1f}, median {round_trip['median']:.1f} "
                     f"[p10 {round_trip['p10']:.1f}, p90 {round_trip['p90']:.1f}] over {round_trip['count']} samples; "
                     f"{round_trip['dropped']} below {round_trip['threshold']:g}")
        else:
            line += "\n  round trip: no sample had words to score"
    return line


def _first_failure(row: dict, target: str, filters) -> tuple[str, object] | None:
    for field in ("prompt", "response"):
        verdict = check_translation(row[field], row[f"{field}_l"], target, filters)
        if verdict is not None:
            return field, verdict
    return None
