"""Translation without a model: segmenting, the pipeline and its batches, the cache (also
across a killed process), the translation memory and the quality filters."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from clo_recipes.errors import CloError
from clo_recipes.translation.base import Translator
from clo_recipes.translation.cache import TranslationCache, TranslatorIdentity
from clo_recipes.translation.filters import check_translation, repetition_share
from clo_recipes.translation.memory import MemoryTranslator
from clo_recipes.translation.pipeline import fixed_order_batches, length_grouped_batches, translate_texts
from clo_recipes.translation.segmenting import Segment, segment_text

REPO = Path(__file__).resolve().parents[1]

MARKDOWN = """# Install the tool

Run `pip install foo`, then read https://example.com/docs. It is easy!

1. Open a terminal.
   - Type **this** and see [the guide](https://x.org/a_b).

```python
print("do not translate me")
```

| Name | Age |
|------|-----|
| Bob | 42 |

> Quoted advice here.
2024
"""


class Upper(Translator):
    """Upper-cases text (placeholders survive): records every batch it is given."""

    def __init__(self, batch_size: int = 4, settings: str = ""):
        self.identity = TranslatorIdentity("test", "upper", "", settings)
        self.batch_size = batch_size
        self.batches: list[list[str]] = []

    def translate(self, texts, src, tgt):
        self.batches.append(list(texts))
        return [text.upper() for text in texts]


class DropsPlaceholders(Upper):
    def translate(self, texts, src, tgt):
        self.batches.append(list(texts))
        return [text.replace("[[0]]", "").replace("[[1]]", "").upper() for text in texts]


# --------------------------------------------------------------------------- segmenting
def test_segments_round_trip_and_leave_code_and_structure_out():
    document = segment_text(MARKDOWN, 400)
    assert document.assemble(lambda s: s.restore(s.text)) == MARKDOWN
    texts = [segment.text for segment in document.segments]
    assert texts == ["Install the tool", "Run [[0]], then read [[1]]. It is easy!", "Open a terminal.",
                     "Type **this** and see [the guide]([[0]]).", "Name", "Age", "Bob", "Quoted advice here."]
    joined = "\n".join(texts)
    for kept_out in ("print(", "```", "# ", "1. ", "- ", "|", "2024", "42", "pip install", "https://"):
        assert kept_out not in joined
    assert document.segments[1].protected == ("`pip install foo`", "https://example.com/docs")


def test_long_lines_are_cut_at_sentences_within_the_limit():
    line = "This sentence is fairly long and keeps going, with commas, clauses and more words. " * 5
    document = segment_text(line.strip(), 100)
    assert all(len(s.text) <= 100 for s in document.segments) and len(document.segments) >= 5
    assert document.assemble(lambda s: s.text) == line.strip()
    unspaced = "這是一個很長的句子沒有空格" * 20
    pieces = segment_text(unspaced, 50).segments
    assert all(len(p.text) <= 50 for p in pieces) and "".join(p.text for p in pieces) == unspaced


def test_restore_needs_every_placeholder_once():
    segment = Segment("Use [[0]] and [[1]]", ("`a`", "`b`"))
    assert segment.restore("Usa [[1]] e [[0]]") == "Usa `b` e `a`"
    assert segment.restore("Usa [[0]] e [[0]]") is None
    assert segment.restore("Usa e") is None
    assert segment.fragments() == ["Use", "and"]
    assert segment.join_fragments({"Use": "Usa", "and": "e"}) == "Usa `a` e `b`"


def test_literal_placeholder_text_in_the_data_is_protected_too():
    document = segment_text("Write [[0]] here", 100)
    assert document.segments == [Segment("Write [[0]] here", ("[[0]]",))]


# --------------------------------------------------------------------------- pipeline
def test_pipeline_keeps_code_translates_the_rest_and_groups_batches_by_length():
    translator = Upper(batch_size=3)
    texts = [MARKDOWN, "Short one.", "A somewhat longer sentence to translate here.", "Short one."]
    outputs, stats = translate_texts(texts, translator, src="en", tgt="it", cache=None, max_segment_chars=400)
    assert outputs[0].startswith("# INSTALL THE TOOL\n\nRUN `pip install foo`, THEN READ https://example.com/docs.")
    assert 'print("do not translate me")' in outputs[0] and "| BOB | 42 |" in outputs[0]
    assert outputs[1] == outputs[3] == "SHORT ONE."
    assert stats.segments == 11 and stats.unique_segments == 10 and stats.translated == 10
    lengths = [len(text) for batch in translator.batches for text in batch]
    assert lengths == sorted(lengths, reverse=True)  # longest first, neighbours together
    assert len(translator.batches[0]) == 3
    assert all(len(batch) * len(batch[0]) <= 3 * lengths[0] for batch in translator.batches)


def test_length_grouped_batches_share_one_padded_size():
    texts = ["x" * n for n in (30, 100, 5, 40, 10, 90, 20, 50, 10)]
    batches = length_grouped_batches(texts, 2)
    assert [[len(t) for t in batch] for batch in batches] == [[100, 90], [50, 40, 30, 20], [10, 10, 5]]
    many_short = ["x" * 100] + [f"{n:02d}" for n in range(20)]
    assert [len(batch) for batch in length_grouped_batches(many_short, 2)] == [2, 8, 8, 3]  # at most 4x rows
    assert fixed_order_batches(texts, 4) == [texts[:4], texts[4:8], texts[8:]]


def test_lost_placeholders_fall_back_to_translating_the_pieces():
    translator = DropsPlaceholders()
    outputs, stats = translate_texts(["Call `run()` to start, then see https://a.io/x for more."], translator,
                                     src="en", tgt="it", cache=None, max_segment_chars=400)
    assert outputs == ["CALL `run()` TO START, THEN SEE https://a.io/x FOR MORE."]
    assert stats.placeholder_fallbacks == 1


def test_cache_makes_the_second_run_free_and_is_keyed_by_settings(tmp_path):
    texts = [f"Sentence number {n}." for n in range(10)]
    with TranslationCache(tmp_path / "t.sqlite") as cache:
        first, stats = translate_texts(texts, Upper(), src="en", tgt="it", cache=cache, max_segment_chars=400)
        assert (stats.translated, stats.cached) == (10, 0)
    with TranslationCache(tmp_path / "t.sqlite") as cache:
        again = Upper()
        second, stats = translate_texts(texts, again, src="en", tgt="it", cache=cache, max_segment_chars=400)
        assert second == first and (stats.translated, stats.cached) == (0, 10) and again.batches == []
        _, stats = translate_texts(texts, Upper(settings="num_beams=4"), src="en", tgt="it", cache=cache,
                                   max_segment_chars=400)
        assert stats.translated == 10
        _, stats = translate_texts(texts, Upper(), src="en", tgt="de", cache=cache, max_segment_chars=400)
        assert stats.translated == 10
    mode = sqlite3.connect(tmp_path / "t.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


KILLABLE = """
import sys, time
from pathlib import Path
from clo_recipes.translation.base import Translator
from clo_recipes.translation.cache import TranslationCache, TranslatorIdentity
from clo_recipes.translation.pipeline import fixed_order_batches, length_grouped_batches, translate_texts

class Slow(Translator):
    identity = TranslatorIdentity("test", "slow")
    batch_size = 5
    def translate(self, texts, src, tgt):
        time.sleep(0.3)
        return [t.upper() for t in texts]

texts = [f"Text number {n} to translate." for n in range(100)]
with TranslationCache(Path(sys.argv[1])) as cache:
    translate_texts(texts, Slow(), src="en", tgt="it", cache=cache, max_segment_chars=400)
"""


def test_a_killed_translation_resumes_from_the_cache(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(KILLABLE, encoding="utf-8")
    db = tmp_path / "cache.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script), str(db)], env=env)
    try:
        deadline = time.time() + 60
        done = 0
        while time.time() < deadline and process.poll() is None:
            if db.exists():
                try:
                    done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM translations").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
                if done >= 15:
                    break
            time.sleep(0.05)
        assert process.poll() is None, "the translation finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    with TranslationCache(db) as cache:
        kept = cache.count()
        assert 15 <= kept < 100 and kept % 5 == 0  # whole batches, committed as they landed

        class Resume(Upper):
            pass

        resume = Resume(batch_size=5)
        resume.identity = TranslatorIdentity("test", "slow")
        texts = [f"Text number {n} to translate." for n in range(100)]
        outputs, stats = translate_texts(texts, resume, src="en", tgt="it", cache=cache, max_segment_chars=400)
    assert (stats.cached, stats.translated) == (kept, 100 - kept)
    assert outputs == [text.upper() for text in texts]


# --------------------------------------------------------------------------- memory
def test_memory_jsonl_whole_texts_then_segments(tmp_path):
    memory = tmp_path / "m.jsonl"
    memory.write_text("\n".join(json.dumps(e, ensure_ascii=False) for e in [
        {"en": "Good morning.", "it": "Buongiorno."},
        {"en": "Open a terminal.", "it": "Apri un terminale."},
        {"en": "Type [[0]] there.", "it": "Scrivi [[0]] lì."},
    ]) + "\n", encoding="utf-8")
    translator = MemoryTranslator(str(memory))
    text = "1. Open a terminal.\n2. Type `ls` there.\n\n```sh\nls -la\n```"
    outputs, _ = translate_texts(["Good morning.", text], translator, src="en", tgt="it", cache=None,
                                 max_segment_chars=400)
    assert outputs == ["Buongiorno.", "1. Apri un terminale.\n2. Scrivi `ls` lì.\n\n```sh\nls -la\n```"]
    with pytest.raises(CloError) as error:
        translator.translate(["Good morning.", "Unknown one.", "Unknown two."], "en", "it")
    assert "lacks 2 of 3 texts; first: 'Unknown one.'" in str(error.value)


def test_memory_tmx(tmp_path):
    tmx = tmp_path / "m.tmx"
    tmx.write_text("""<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header srclang="en-US" datatype="plaintext"/><body>
<tu><tuv xml:lang="en-US"><seg>Thank you.</seg></tuv><tuv xml:lang="it-IT"><seg>Grazie.</seg></tuv></tu>
<tu><tuv xml:lang="en"><seg>Hello &amp; welcome.</seg></tuv><tuv xml:lang="de"><seg>Hallo.</seg></tuv></tu>
</body></tmx>""", encoding="utf-8")
    translator = MemoryTranslator(str(tmx))
    assert translator.translate(["Thank you."], "en", "it") == ["Grazie."]
    assert translator.translate(["Hello & welcome."], "en", "de") == ["Hallo."]


# --------------------------------------------------------------------------- filters
FILTERS = SimpleNamespace(language_id=True, min_length_ratio=0.3, max_length_ratio=3.0,
                          max_repetition=0.5, drop_copies=True)
SOURCE = "Boil the egg for about six minutes, then cool it in cold water."
GOOD = "Bollire l'uovo per circa sei minuti, poi raffreddarlo in acqua fredda."


@pytest.mark.parametrize("translation, reason", [
    ("   ", "empty"),
    (SOURCE, "copy"),
    ("Uovo.", "length_ratio"),
    (GOOD + " " + GOOD * 3, "length_ratio"),
    ("Bollire l'uovo per sei minuti, " * 3 + "poi raffreddarlo.", "repetition"),
    ("Hervir el huevo durante unos seis minutos y luego enfriarlo en agua fría.", "language"),
])
def test_each_filter_drops_its_failure(translation, reason):
    verdict = check_translation(SOURCE, translation, "it", FILTERS)
    assert verdict is not None and verdict.reason == reason, verdict


@pytest.mark.parametrize("source, translation, target", [
    (SOURCE, GOOD, "it"),
    ("Python", "Python", "it"),  # short identical texts are names, not copies
    ("OK", "Va bene, d'accordo", "it"),  # too short for a length ratio
    ("What is the weather like today in the city?", "今天城市里的天气怎么样？", "zh"),  # weighted ratio
    ("Repeat after me: I will not give up, I will not give up, I will not give up.",  # repetitive source
     "Ripeti dopo di me: non mi arrenderò, non mi arrenderò, non mi arrenderò, non mi arrenderò.", "it"),
    ("Run this:\n```python\nprint('hello world, this is a long line of code')\n```",
     "Esegui questo:\n```python\nprint('hello world, this is a long line of code')\n```", "it"),
    ("Arrive two hours before a domestic flight and three hours before an international flight.",
     "Arriva due ore prima di un volo nazionale e tre ore prima di un volo internazionale.", "it"),
])
def test_filters_keep_good_translations(source, translation, target):
    assert check_translation(source, translation, target, FILTERS) is None


def test_filters_can_be_switched_off():
    relaxed = SimpleNamespace(**{**FILTERS.__dict__, "language_id": False, "drop_copies": False})
    assert check_translation(SOURCE, SOURCE.replace("Boil", "Boil"), "it", relaxed) is None
    assert repetition_share("uno due tre quattro cinque sei " * 3) == 1.0
