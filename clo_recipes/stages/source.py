"""Source stage: read the English SFT data, convert it to single-turn samples, clean them and
draw the held-out and nested training sets (`clo_recipes.data`).

Writes `samples.jsonl` (training samples, in their seeded order: the first n lines are the
n-sample selection) and `eval_samples.jsonl` (held-out), both `{"id", "prompt", "response"}`.
Returns the counts the manifest shows: records read, samples parsed, each cleaning drop,
and how many samples were asked for against how many there were.
"""

from __future__ import annotations

from collections import Counter

from clo_recipes.data.formats import resolve_format, to_samples
from clo_recipes.data.readers import read_records
from clo_recipes.data.records import unique_ids
from clo_recipes.data.selection import clean, select
from clo_recipes.engine.context import StageContext, write_jsonl
from clo_recipes.errors import StageError


def run(ctx: StageContext) -> dict:
    data = ctx.recipe.data
    counts: Counter = Counter()
    records = read_records(data.source, config=data.config, split=data.split, revision=data.revision)
    fmt, records = resolve_format(records, data.format, data.fields)
    parsed = list(unique_ids(to_samples(records, fmt, data.fields, counts)))
    cleaned = clean(parsed, min_chars=data.min_chars, max_chars=data.max_chars, dedup=data.dedup, counts=counts)
    chosen = select(cleaned, samples_wanted=data.samples, eval_wanted=data.eval_samples, seed=data.seed)
    if not chosen.train:
        raise StageError(
            f"no training samples left from {data.source}: {len(parsed)} parsed, {len(cleaned)} after "
            f"cleaning, {len(chosen.eval)} held out",
            hint="check data.format / data.fields, data.min_chars / data.max_chars and data.eval_samples",
        )
    if len(chosen.train) < data.samples:
        ctx.log.warning("data.samples asks for %d samples; only %d are left after cleaning and holding out %d",
                        data.samples, len(chosen.train), len(chosen.eval))
    write_jsonl(ctx.work_dir / "samples.jsonl", (s.as_row() for s in chosen.train))
    write_jsonl(ctx.work_dir / "eval_samples.jsonl", (s.as_row() for s in chosen.eval))
    dropped = {reason: counts[reason] for reason in ("too_short", "too_long", "duplicate", "no_exchange",
                                                     "oasst_not_english", "oasst_no_top_reply",
                                                     "oasst_unusable_root") if counts[reason]}
    return {
        "format": fmt,
        "records": counts["records"],
        "parsed": len(parsed),
        "cleaned": len(cleaned),
        "samples": len(chosen.train),
        "eval_samples": len(chosen.eval),
        "samples_requested": data.samples,
        "eval_samples_requested": data.eval_samples,
        "dropped": dropped,
    }
