"""The translate stage: memory and hf backends through `make_context`, filters with their
counts and `dropped.jsonl`, and the shared cache making a second recipe free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.runner.testing import make_context
from clo_recipes.errors import CloError

GOOD = {
    "How long should I boil an egg?": "Per quanto tempo devo bollire un uovo?",
    "Boil it for about six minutes, then cool it in cold water.":
        "Bollilo per circa sei minuti, poi raffreddalo in acqua fredda.",
    "What is the capital of Italy?": "Qual è la capitale d'Italia?",
    "The capital of Italy is Rome, a city with a very long history.":
        "La capitale d'Italia è Roma, una città con una storia molto lunga.",
    "Name a fruit.": "Nomina un frutto.",
    "An apple is a sweet fruit that grows on trees in many countries.":
        "La mela è un frutto dolce che cresce sugli alberi in molti paesi.",
}
BAD = {  # English text -> (its bad translation, the reason it must be dropped)
    "Why is the sky blue during the day?": ("   ", "empty"),
    "Sunlight is scattered by the air, and blue light is scattered the most.":
        ("Sunlight is scattered by the air, and blue light is scattered the most.", "copy"),
    "Tell me about cats and why people like them so much.": ("Gatti.", "length_ratio"),
    "Cats are independent, clean and affectionate animals that many people love.":
        ("I gatti sono animali indipendenti, i gatti sono animali indipendenti, i gatti sono animali "
         "indipendenti, i gatti sono animali indipendenti.", "repetition"),
    "Give me a tip for learning a new language quickly.":
        ("Dame un consejo para aprender un nuevo idioma rápidamente.", "language"),
}


def source_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "source-done"
    folder.mkdir()
    english = list(GOOD) + list(BAD)
    samples = [{"id": f"s{n}", "prompt": english[2 * n], "response": english[2 * n + 1]} for n in range(3)]
    samples += [{"id": "bad-empty", "prompt": "Why is the sky blue during the day?", "response": english[1]},
                {"id": "bad-copy", "prompt": english[0],
                 "response": "Sunlight is scattered by the air, and blue light is scattered the most."},
                {"id": "bad-ratio", "prompt": "Tell me about cats and why people like them so much.", "response": english[1]},
                {"id": "bad-loop", "prompt": english[2],
                 "response": "Cats are independent, clean and affectionate animals that many people love."},
                {"id": "bad-lang", "prompt": "Give me a tip for learning a new language quickly.", "response": english[3]}]
    write_jsonl(folder / "samples.jsonl", samples)
    write_jsonl(folder / "eval_samples.jsonl", [{"id": "e1", "prompt": english[4], "response": english[5]}])
    return folder


def memory_file(tmp_path: Path) -> Path:
    path = tmp_path / "memory.jsonl"
    entries = [{"en": en, "it": it} for en, it in GOOD.items()] + [{"en": en, "it": it} for en, (it, _) in BAD.items()]
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    return path


def test_translate_stage_filters_and_lists_dropped_samples(tmp_path):
    from clo_recipes.stages import translate

    recipe = {"language": "it", "translation": {"backend": "memory", "memory_file": str(memory_file(tmp_path))}}
    ctx = make_context(recipe, "translate", tmp_path, inputs={"source": source_dir(tmp_path)})
    stats = translate.run(ctx)
    assert (stats["translated"], stats["eval_translated"], stats["dropped"]) == (3, 1, 5)
    assert stats["dropped_by_reason"] == {"empty": 1, "copy": 1, "length_ratio": 1, "repetition": 1, "language": 1,
                                          "round_trip": 0}
    assert stats["round_trip"] is None  # not asked for: nothing back-translated, no score in the rows
    kept = list(read_jsonl(ctx.work_dir / "translated.jsonl"))
    assert [row["id"] for row in kept] == ["s0", "s1", "s2"]
    assert kept[0] == {"id": "s0", "prompt": "How long should I boil an egg?",
                       "response": "Boil it for about six minutes, then cool it in cold water.",
                       "prompt_l": "Per quanto tempo devo bollire un uovo?",
                       "response_l": "Bollilo per circa sei minuti, poi raffreddalo in acqua fredda."}
    dropped = {row["id"]: row for row in read_jsonl(ctx.work_dir / "dropped.jsonl")}
    assert {key: (row["reason"], row["field"]) for key, row in dropped.items()} == {
        "bad-empty": ("empty", "prompt"), "bad-copy": ("copy", "response"), "bad-ratio": ("length_ratio", "prompt"),
        "bad-loop": ("repetition", "response"), "bad-lang": ("language", "prompt")}
    assert dropped["bad-lang"]["detail"].startswith("detected es") and dropped["bad-lang"]["split"] == "train"
    assert list(read_jsonl(ctx.work_dir / "eval_translated.jsonl"))[0]["prompt_l"] == "Nomina un frutto."


def test_translate_stage_with_a_missing_memory_entry_says_how_many(tmp_path):
    from clo_recipes.stages import translate

    memory = tmp_path / "memory.jsonl"
    memory.write_text(json.dumps({"en": "How long should I boil an egg?", "it": "x"}) + "\n", encoding="utf-8")
    recipe = {"language": "it", "translation": {"backend": "memory", "memory_file": str(memory)}}
    ctx = make_context(recipe, "translate", tmp_path, inputs={"source": source_dir(tmp_path)})
    with pytest.raises(CloError, match=r"lacks 10 of 11 texts; first: 'Boil it"):
        translate.run(ctx)


def test_a_second_recipe_with_the_same_translator_pays_nothing(tmp_path):
    from clo_recipes.stages import translate
    from clo_recipes.translation.tiny import build_tiny_marian

    model = build_tiny_marian(tmp_path / "opus-tiny")
    relaxed = {"language_id": False, "min_length_ratio": 0.001, "max_length_ratio": 1000.0,
               "max_repetition": 1.0, "drop_copies": False}
    translation = {"backend": "hf", "model": str(model), "max_new_tokens": 6, "filters": relaxed}
    source = source_dir(tmp_path)
    first = translate.run(make_context({"name": "one", "language": "it", "translation": translation},
                                       "translate", tmp_path / "a", inputs={"source": source}))
    assert first["translation"]["translated"] == 11 and first["translation"]["cached"] == 0
    # Another recipe, another run folder, the same cache dir: nothing is translated again.
    ctx = make_context({"name": "two", "language": "it", "translation": translation,
                        "cache_dir": str(tmp_path / "a" / "cache")}, "translate", tmp_path / "b",
                       inputs={"source": source})
    second = translate.run(ctx)
    assert second["translation"]["translated"] == 0 and second["translation"]["cached"] == 11
    assert second["translated"] + second["dropped"] == 8
