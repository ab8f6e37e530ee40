"""The shipped demo data stay consistent: the `memory` backend looks English texts up verbatim,
and the multiple-choice sets are compared across languages question by question."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clo_recipes.recipe.languages import get_language

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data"
MC_SETS = ROOT / "clo_recipes" / "evaluation" / "mc_sets"
MC_LANGUAGES = ("en", "it", "es", "de", "fr", "pt")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def nonempty(text: object) -> bool:
    return isinstance(text, str) and text == text.strip() and bool(text)


@pytest.fixture(scope="module")
def demo() -> list[dict]:
    return read_jsonl(DATA / "demo_en.jsonl")


def memory_files() -> list[Path]:
    return sorted(DATA.glob("demo_memory_*.jsonl"))


def test_demo_samples_are_well_formed(demo):
    assert len(demo) == 320
    assert all(set(row) == {"id", "prompt", "response"} for row in demo)
    ids = [row["id"] for row in demo]
    assert ids == [f"demo-{n:03d}" for n in range(1, len(demo) + 1)]
    assert all(nonempty(row["prompt"]) and nonempty(row["response"]) for row in demo)
    assert len({row["prompt"] for row in demo}) == len(demo), "duplicate prompts"
    assert len({row["response"] for row in demo}) == len(demo), "duplicate responses"


def test_demo_samples_stay_short_for_cpu_training(demo):
    # Training runs on 2 CPU cores: long pairs would blow the demo's time budget.
    too_long = [row["id"] for row in demo
                if len(row["prompt"].split()) > 20 or len(row["response"].split()) > 40]
    assert too_long == []


def test_there_is_a_translation_memory_for_a_registered_language():
    files = memory_files()
    assert files, "recipes/data/demo_memory_<iso1>.jsonl is missing"
    for path in files:
        code = path.stem.removeprefix("demo_memory_")
        assert get_language(code).iso1 == code


@pytest.mark.parametrize("path", memory_files(), ids=lambda p: p.name)
def test_memory_covers_every_demo_text_exactly(path, demo):
    code = path.stem.removeprefix("demo_memory_")
    entries = read_jsonl(path)
    assert all(set(entry) == {"en", code} for entry in entries)
    assert all(nonempty(entry["en"]) and nonempty(entry[code]) for entry in entries)
    english = [entry["en"] for entry in entries]
    assert len(set(english)) == len(english), "one line per distinct English text"
    texts = {row["prompt"] for row in demo} | {row["response"] for row in demo}
    assert texts - set(english) == set(), "demo texts without a translation"
    assert set(english) - texts == set(), "memory entries for texts the demo no longer has"
    # A translation that is a copy of its source is a missing translation.
    assert [entry["en"] for entry in entries if entry["en"] == entry[code]] == []


@pytest.fixture(scope="module")
def mc_sets() -> dict[str, list[dict]]:
    return {lang: read_jsonl(MC_SETS / f"{lang}.jsonl") for lang in MC_LANGUAGES}


def test_mc_sets_are_well_formed(mc_sets):
    for lang, rows in mc_sets.items():
        assert len(rows) == 60, lang
        for row in rows:
            assert set(row) == {"id", "question", "choices", "answer"}, (lang, row)
            assert re.fullmatch(r"mc-\d{3}", row["id"]), (lang, row["id"])
            assert nonempty(row["question"]), (lang, row["id"])
            assert len(row["choices"]) == 4 and all(map(nonempty, row["choices"])), (lang, row["id"])
            assert len(set(row["choices"])) == 4, (lang, row["id"], "repeated choice")
            assert type(row["answer"]) is int and 0 <= row["answer"] < 4, (lang, row["id"])
        assert len({row["id"] for row in rows}) == len(rows), lang


def test_mc_sets_are_parallel(mc_sets):
    english = mc_sets["en"]
    for lang, rows in mc_sets.items():
        assert [r["id"] for r in rows] == [r["id"] for r in english], lang
        # A translation keeps the correct option where the English set has it.
        assert [r["answer"] for r in rows] == [r["answer"] for r in english], lang
        if lang != "en":
            same = [r["id"] for r, e in zip(rows, english) if r["question"] == e["question"]]
            assert same == [], f"{lang}: questions left untranslated"


def test_mc_answer_positions_vary(mc_sets):
    answers = [row["answer"] for row in mc_sets["en"]]
    # No position may dominate, or a model that always picks it would look competent.
    assert max(answers.count(i) for i in range(4)) <= len(answers) // 2
    assert set(answers) == {0, 1, 2, 3}
