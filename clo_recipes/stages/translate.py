"""Translate stage: the source stage's queries and answers into the target language.

Reads `samples.jsonl` and `eval_samples.jsonl` of the source stage; translates every distinct
text once (through `clo_recipes.translation`: segmenting, the shared SQLite cache at
`<cache_dir>/translations.sqlite`, length-grouped batches), then applies the quality filters.

Writes:
- `translated.jsonl` / `eval_translated.jsonl`: `{"id", "prompt", "response", "prompt_l",
  "response_l"}` for the samples that passed every filter;
- `dropped.jsonl`: `{"id", "split", "reason", "field", "detail", "prompt", "response",
  "prompt_l", "response_l"}`, one line per dropped sample (its first failing check).
Returns counts per split and per drop reason, and the translation's own numbers (segments,
cache hits, throughput). An interrupted stage loses nothing: finished batches are in the cache.
"""

from __future__ import annotations

from collections import Counter

from clo_recipes.engine.context import StageContext, read_jsonl, write_jsonl
from clo_recipes.errors import StageError
from clo_recipes.recipe.languages import get_language
from clo_recipes.translation.backends import build_translator
from clo_recipes.translation.cache import TranslationCache
from clo_recipes.translation.filters import REASONS, check_translation
from clo_recipes.translation.pipeline import translate_texts

SOURCE_LANGUAGE = "en"
SPLITS = (("train", "samples.jsonl", "translated.jsonl"), ("eval", "eval_samples.jsonl", "eval_translated.jsonl"))


def run(ctx: StageContext) -> dict:
    section = ctx.recipe.translation
    target = get_language(ctx.recipe.language).iso1
    source_dir = ctx.input("source")
    splits = {name: list(read_jsonl(source_dir / file)) for name, file, _ in SPLITS if (source_dir / file).is_file()}
    texts = list(dict.fromkeys(row[field] for rows in splits.values() for row in rows
                               for field in ("prompt", "response")))
    translator = build_translator(section, src=SOURCE_LANGUAGE, tgt=target)
    try:
        with TranslationCache(ctx.cache_dir / "translations.sqlite") as cache:
            translations, stats = translate_texts(texts, translator, src=SOURCE_LANGUAGE, tgt=target, cache=cache,
                                                  max_segment_chars=section.max_segment_chars)
    finally:
        translator.close()
    translated = dict(zip(texts, translations))

    reasons: Counter = Counter()
    dropped: list[dict] = []
    counts: dict[str, int] = {}
    for name, _, out_file in SPLITS:
        kept = []
        for row in splits.get(name, []):
            out = {**row, "prompt_l": translated[row["prompt"]], "response_l": translated[row["response"]]}
            failure = _first_failure(out, target, section.filters)
            if failure is None:
                kept.append(out)
            else:
                field, verdict = failure
                reasons[verdict.reason] += 1
                dropped.append({"id": row["id"], "split": name, "reason": verdict.reason, "field": field,
                                "detail": verdict.detail, **{k: out[k] for k in ("prompt", "response", "prompt_l", "response_l")}})
        counts[name] = write_jsonl(ctx.work_dir / out_file, kept)
    write_jsonl(ctx.work_dir / "dropped.jsonl", dropped)
    if splits.get("train") and not counts["train"]:
        raise StageError(f"every translated training sample was dropped by the quality filters: {dict(reasons)}",
                         hint="inspect dropped.jsonl; a wrong translation.model or language shows up as 'language' drops")
    return {
        "language": target,
        "backend": section.backend,
        "translated": counts["train"],
        "eval_translated": counts["eval"],
        "dropped": len(dropped),
        "dropped_by_reason": {reason: reasons[reason] for reason in REASONS},
        "translation": stats.as_dict(),
    }


def _first_failure(row: dict, target: str, filters) -> tuple[str, object] | None:
    for field in ("prompt", "response"):
        verdict = check_translation(row[field], row[f"{field}_l"], target, filters)
        if verdict is not None:
            return field, verdict
    return None
