"""English SFT data: formats, OpenAssistant trees, cleaning, nested sampling, the source stage."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from clo_recipes.data.formats import resolve_format, to_samples
from clo_recipes.data.oasst import top_reply
from clo_recipes.data.readers import read_records
from clo_recipes.data.records import Sample
from clo_recipes.data.selection import clean, select
from clo_recipes.engine.context import read_jsonl
from clo_recipes.errors import CloError
from clo_recipes.recipe.schema.data import FieldMap

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def convert(path: Path, fmt: str = "auto", fields: FieldMap | None = None) -> tuple[str, list[Sample], Counter]:
    counts: Counter = Counter()
    concrete, records = resolve_format(read_records(str(path)), fmt, fields or FieldMap())
    return concrete, list(to_samples(records, concrete, fields or FieldMap(), counts)), counts


# --------------------------------------------------------------------------- formats
def test_pairs_with_custom_fields_and_extra_input(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"uid": 7, "question": "Summarise this.", "ctx": "Cats sleep a lot.", "answer": "Cats nap."},
        {"uid": 8, "question": "Say hi.", "ctx": None, "answer": "Hi!"},
    ])
    fields = FieldMap(prompt="question", response="answer", input="ctx")
    fmt, samples, counts = convert(path, "pairs", fields)
    assert fmt == "pairs" and counts["records"] == 2
    assert samples[0].prompt == "Summarise this.\n\nCats sleep a lot."
    assert samples[1].prompt == "Say hi." and samples[1].response == "Hi!"
    # No `id` field: ids are content hashes, stable across runs.
    assert samples[0].id.startswith("s-") and samples[0].id == convert(path, "pairs", fields)[1][0].id


def test_alpaca_and_dolly_records_are_detected_and_joined(tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    ])
    fmt, samples, _ = convert(alpaca)
    assert fmt == "alpaca"
    assert [(s.prompt, s.response) for s in samples] == [
        ("Translate to French.\n\nGood morning", "Bonjour"), ("Name a colour.", "Blue.")]
    dolly = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Who wrote Hamlet?", "context": "", "response": "Shakespeare.", "category": "qa"}])
    fmt, samples, _ = convert(dolly)
    assert fmt == "alpaca" and samples[0].response == "Shakespeare."


def test_conversations_give_their_first_user_assistant_exchange(tmp_path):
    sharegpt = write_jsonl(tmp_path / "s.jsonl", [
        {"id": "c1", "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4."},
            {"from": "human", "value": "And 3+3?"},
            {"from": "gpt", "value": "6."}]},
        {"id": "c2", "conversations": [{"from": "gpt", "value": "Hello, how can I help?"}]},
    ])
    fmt, samples, counts = convert(sharegpt)
    assert fmt == "sharegpt"
    assert samples == [Sample("c1", "What is 2+2?", "4.")]
    assert counts["no_exchange"] == 1

    messages = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "x"},
                      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                      {"role": "assistant", "content": "Hello!"}]}])
    fmt, samples, _ = convert(messages)
    assert fmt == "messages" and (samples[0].prompt, samples[0].response) == ("Hi there", "Hello!")


def test_missing_field_names_the_first_offending_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "a", "response": "b"},
        {"prompt": "c", "response": "d"},
        {"prompt": "e", "answer": "f"},
        {"prompt": "g"},
    ])
    with pytest.raises(CloError) as error:
        convert(path, "pairs")
    message = str(error.value)
    assert "bad.jsonl line 3" in message and "'response'" in message and "answer, prompt" in message

    turns = write_jsonl(tmp_path / "turns.jsonl", [{"conversations": [{"from": "human"}]}])
    with pytest.raises(CloError, match=r"turns.jsonl line 1 conversations\[1\]: missing field 'value'"):
        convert(turns, "sharegpt")


def test_unknown_layout_is_an_error_listing_the_fields(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"q": "a", "a": "b"}])
    with pytest.raises(CloError, match="cannot tell the data format from fields a, q"):
        convert(path)


def test_json_csv_and_parquet_files_read_like_jsonl(tmp_path):
    rows = [{"id": "r1", "prompt": "One?", "response": "1"}, {"id": "r2", "prompt": "Two?", "response": "2"}]
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}), encoding="utf-8")
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "prompt", "response"])
        writer.writeheader()
        writer.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.json", "d.csv", "d.parquet"):
        _, samples, _ = convert(tmp_path / name)
        assert [s.as_row() for s in samples] == rows, name
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("id,prompt\nr1,hello\n", encoding="utf-8")
    with pytest.raises(CloError, match="bad.csv line 2: missing field 'response'"):
        convert(csv_bad, "pairs")


def test_missing_local_file_and_unreachable_hub_dataset_are_clear(tmp_path):
    with pytest.raises(CloError, match="data.source file not found"):
        list(read_records(str(tmp_path / "nope.jsonl")))
    with pytest.raises(CloError) as error:
        list(read_records("no-such-org/no-such-dataset"))
    assert "no-such-org/no-such-dataset" in str(error.value)
    assert "local" in error.value.problems[0].hint and "data.source" in error.value.problems[0].hint


# --------------------------------------------------------------------------- OpenAssistant
def oasst_messages() -> list[dict]:
    def msg(mid, parent, role, text, lang="en", rank=None, deleted=False, review=True):
        return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "lang": lang,
                "rank": rank, "deleted": deleted, "review_result": review, "message_tree_id": "t"}

    return [
        msg("A", None, "prompter", "Root A?"),
        msg("A1", "A", "assistant", "A second best", rank=1),
        msg("A2", "A", "assistant", "A best", rank=0),
        msg("A3", "A", "assistant", "A deleted unranked", deleted=True),
        msg("A2x", "A2", "prompter", "follow-up, never a root"),
        msg("B", None, "prompter", "Wurzel B?", lang="de"),
        msg("B1", "B", "assistant", "Antwort", lang="de", rank=0),
        msg("C", None, "prompter", "Root C?"),
        msg("C1", "C", "assistant", "C only reply"),
        msg("D", None, "prompter", "Root D?"),
        msg("D1", "D", "assistant", "D one"),
        msg("D2", "D", "assistant", "D two"),
        msg("E", None, "prompter", "Root E?"),
        msg("E1", "E", "assistant", "E rank 0 but deleted", rank=0, deleted=True),
        msg("E2", "E", "assistant", "E rank 0 failed review", rank=0, review=False),
        msg("E3", "E", "assistant", "E rank 2", rank=2),
    ]


def test_oasst_flat_table_picks_top_ranked_replies_of_english_roots(tmp_path):
    messages = oasst_messages()
    random.Random(0).shuffle(messages)  # replies may come before their root
    fmt, samples, counts = convert(write_jsonl(tmp_path / "oasst.jsonl", messages))
    assert fmt == "oasst"
    assert sorted((s.id, s.prompt, s.response) for s in samples) == [
        ("A", "Root A?", "A best"), ("C", "Root C?", "C only reply"), ("E", "Root E?", "E rank 2")]
    assert counts["oasst_not_english"] == 1 and counts["oasst_no_top_reply"] == 1


def test_oasst_tree_export_gives_the_same_pairs(tmp_path):
    flat = oasst_messages()
    by_parent: dict[str | None, list[dict]] = {}
    for message in flat:
        by_parent.setdefault(message["parent_id"], []).append(dict(message))

    def nest(message: dict) -> dict:
        return {**message, "replies": [nest(child) for child in by_parent.get(message["message_id"], [])]}

    trees = [{"message_tree_id": root["message_id"], "tree_state": "ready_for_export", "prompt": nest(root)}
             for root in by_parent[None]]
    fmt, samples, _ = convert(write_jsonl(tmp_path / "trees.jsonl", trees))
    assert fmt == "oasst"
    assert [(s.id, s.response) for s in samples] == [("A", "A best"), ("C", "C only reply"), ("E", "E rank 2")]


def test_top_reply_breaks_rank_ties_by_order():
    replies = [{"role": "assistant", "text": "first", "rank": 0}, {"role": "assistant", "text": "second", "rank": 0}]
    assert top_reply(replies)["text"] == "first"


# --------------------------------------------------------------------------- cleaning and sampling
def test_clean_counts_each_drop():
    samples = [Sample("1", " Hello? ", " Hi. "), Sample("2", "hello?", "Again"), Sample("3", "", "x"),
               Sample("4", "Long", "y" * 50), Sample("5", "Fine", "ok")]
    counts: Counter = Counter()
    kept = clean(samples, min_chars=1, max_chars=10, dedup=True, counts=counts)
    assert [(s.id, s.prompt, s.response) for s in kept] == [("1", "Hello?", "Hi."), ("5", "Fine", "ok")]
    assert counts == Counter(duplicate=1, too_short=1, too_long=1)
    assert len(clean(samples, min_chars=1, max_chars=10, dedup=False, counts=Counter())) == 3


def test_sampling_is_nested_and_the_held_out_set_never_moves():
    pool = [Sample(f"id-{n}", f"q{n}", f"a{n}") for n in range(500)]
    small = select(pool, samples_wanted=100, eval_wanted=30, seed=7)
    large = select(pool, samples_wanted=200, eval_wanted=30, seed=7)
    assert {s.id for s in small.train} < {s.id for s in large.train}
    assert large.train[:100] == small.train  # the first n lines are the n-sample set
    assert small.eval == large.eval and len(small.eval) == 30
    assert not {s.id for s in large.eval} & {s.id for s in large.train}
    # File order does not matter, the seed does.
    shuffled = pool[:]
    random.Random(1).shuffle(shuffled)
    assert select(shuffled, samples_wanted=100, eval_wanted=30, seed=7) == small
    other = select(pool, samples_wanted=100, eval_wanted=30, seed=8)
    assert {s.id for s in other.train} != {s.id for s in small.train}
    # Asking for more than there is returns everything not held out.
    assert len(select(pool, samples_wanted=10_000, eval_wanted=30, seed=7).train) == 470


# --------------------------------------------------------------------------- the source stage
def test_source_stage_on_the_demo_data(tmp_path):
    from clo_recipes.runner.testing import make_context
    from clo_recipes.stages import source

    demo = REPO / "recipes" / "data" / "demo_en.jsonl"
    recipe = {"data": {"source": str(demo), "format": "auto", "samples": 128, "eval_samples": 40, "seed": 42}}
    ctx = make_context(recipe, "source", tmp_path)
    stats = source.run(ctx)
    assert stats["format"] == "pairs" and stats["records"] == 320 and stats["parsed"] == 320
    assert (stats["samples"], stats["eval_samples"], stats["dropped"]) == (128, 40, {})
    train = list(read_jsonl(ctx.work_dir / "samples.jsonl"))
    held = list(read_jsonl(ctx.work_dir / "eval_samples.jsonl"))
    assert len(train) == 128 and len(held) == 40
    assert set(train[0]) == {"id", "prompt", "response"} and train[0]["id"].startswith("demo-")
    assert not {r["id"] for r in train} & {r["id"] for r in held}

    bigger = make_context({**recipe, "data": {**recipe["data"], "samples": 256}}, "source", tmp_path / "b")
    source.run(bigger)
    assert list(read_jsonl(bigger.work_dir / "eval_samples.jsonl")) == held
    assert list(read_jsonl(bigger.work_dir / "samples.jsonl"))[:128] == train


def test_source_stage_with_nothing_left_is_a_stage_error(tmp_path):
    from clo_recipes.runner.testing import make_context
    from clo_recipes.stages import source

    path = write_jsonl(tmp_path / "tiny.jsonl", [{"prompt": "a?", "response": "b"}])
    ctx = make_context({"data": {"source": str(path), "eval_samples": 1}}, "source", tmp_path)
    with pytest.raises(CloError, match="no training samples left"):
        source.run(ctx)
