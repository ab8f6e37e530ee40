"""Pairs stage: CLO quadruples from the translated samples.

Writes `train.jsonl` and `eval.jsonl` (held-out), one `{"id", "x_en", "y_en", "x_l", "y_l"}`
per sample: the English query and answer and their translations. The id is the source
sample's (record id or content hash), so a pair keeps its id across runs and recipes. The
training methods derive what they need from these: CLO's two preference pairs per sample,
and the SFT baseline's (x_l, y_l) / (x_en, y_en) sets.

Returns counts and, per language, token lengths of queries, answers and whole pairs with the
recipe model's tokenizer (mean, median, 95th percentile, max): what `train.max_length` has to
hold, and how much more the target language costs than English.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from clo_recipes.engine.context import StageContext, read_jsonl, write_jsonl
from clo_recipes.errors import StageError

SPLITS = (("train", "translated.jsonl", "train.jsonl"), ("eval", "eval_translated.jsonl", "eval.jsonl"))
TOKENIZE_BATCH = 256


def quadruple(row: dict) -> dict[str, str]:
    return {"id": str(row["id"]), "x_en": row["prompt"], "y_en": row["response"],
            "x_l": row["prompt_l"], "y_l": row["response_l"]}


def summarise(lengths: Sequence[int]) -> dict[str, float]:
    """mean / p50 / p95 / max of token counts (nearest-rank percentiles)."""
    if not lengths:
        return {"mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(lengths)

    def rank(q: float) -> int:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"mean": round(sum(ordered) / len(ordered), 2), "p50": rank(0.5), "p95": rank(0.95), "max": ordered[-1]}


def token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        encoded = tokenizer(texts[start:start + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]
        counts.extend(len(ids) for ids in encoded)
    return counts


def length_stats(tokenizer: Any, pairs: list[dict], target: str) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for language, (x, y) in (("en", ("x_en", "y_en")), (target, ("x_l", "y_l"))):
        queries = token_counts(tokenizer, [pair[x] for pair in pairs])
        answers = token_counts(tokenizer, [pair[y] for pair in pairs])
        stats[language] = {"query": summarise(queries), "answer": summarise(answers),
                           "pair": summarise([a + b for a, b in zip(queries, answers)])}
    english = stats["en"]["pair"]["mean"]
    stats["target_to_english_tokens"] = round(stats[target]["pair"]["mean"] / english, 3) if english else None
    return stats


def run(ctx: StageContext) -> dict:
    from clo_recipes.training.gguf_cache import plain_model_section
    from clo_recipes.training.loading import load_tokenizer

    target = ctx.recipe.language
    translated_dir = ctx.input("translate")
    splits = {name: [quadruple(row) for row in read_jsonl(translated_dir / source)]
              if (translated_dir / source).is_file() else [] for name, source, _ in SPLITS}
    if not splits["train"]:
        raise StageError(f"no translated training samples in {translated_dir}", hint="see the translate stage's dropped.jsonl")
    for name, _, out_file in SPLITS:
        write_jsonl(ctx.work_dir / out_file, splits[name])
    tokenizer = load_tokenizer(plain_model_section(ctx.recipe.model, ctx.cache_dir, convert=False))
    return {
        "pairs": len(splits["train"]),
        "eval_pairs": len(splits["eval"]),
        "tokens": length_stats(tokenizer, splits["train"], target),
    }
