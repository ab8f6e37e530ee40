"""Translation backends on real machinery, offline: tiny seq2seq models built on the fly (`hf`),
a tiny chat LLM (`hf-causal`), a real HTTP server on 127.0.0.1 (`openai`), and the plan-time
language-support check."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from clo_recipes.errors import CloError
from clo_recipes.translation.cache import TranslationCache
from clo_recipes.translation.pipeline import translate_texts
from clo_recipes.translation.coverage import check_language_support, detect_family, opus_target


@pytest.fixture(scope="module")
def m2m100(tmp_path_factory):
    from clo_recipes.translation.tiny import build_tiny_m2m100

    return build_tiny_m2m100(tmp_path_factory.mktemp("m2m100") / "model")


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    from clo_recipes.translation.tiny import build_tiny_marian

    return build_tiny_marian(tmp_path_factory.mktemp("marian") / "opus")


# --------------------------------------------------------------------------- hf seq2seq
def test_m2m100_gets_source_token_and_forced_target_token(m2m100):
    from clo_recipes.translation.hf_seq2seq import Seq2SeqTranslator

    translator = Seq2SeqTranslator(str(m2m100), max_new_tokens=4)
    assert translator.family == "m2m100"
    assert translator.identity.revision.startswith("sha256:")  # local folders are keyed by content
    generated = translator.generate_ids(["The cat sits.", "Water boils at one hundred degrees."], "en", "it")
    tokenizer = translator._tokenizer
    assert tokenizer.src_lang == "en"
    assert generated[:, 1].tolist() == [tokenizer.get_lang_id("it")] * 2
    generated = translator.generate_ids(["The cat sits."], "en", "de")
    assert generated[0, 1].item() == tokenizer.get_lang_id("de")
    assert "__it__" not in " ".join(translator.translate(["The cat sits."], "en", "it"))


def test_hf_backend_batches_by_length_without_changing_outputs(m2m100):
    from clo_recipes.translation.hf_seq2seq import Seq2SeqTranslator

    translator = Seq2SeqTranslator(str(m2m100), batch_size=2, max_new_tokens=6)
    short = "The cat sits."
    long = "Please write a short poem about the sea, the wind and the stars, and the dog in the park."
    alone = translator.translate([short], "en", "it")[0]
    padded = translator.translate([long, short], "en", "it")[1]
    assert alone == padded  # padding is masked: a row's output does not depend on its batch

    seen: list[list[str]] = []
    original = translator.translate
    translator.translate = lambda texts, src, tgt: (seen.append(list(texts)), original(texts, src, tgt))[1]
    document = "Run this:\n\n```python\nprint('keep me')\n```\n\n- " + long
    texts = [document, short, "Water boils.", long + " Then the cat sleeps all afternoon under the warm sun."]
    outputs, stats = translate_texts(texts, translator, src="en", tgt="it", cache=None, max_segment_chars=120)
    assert "```python\nprint('keep me')\n```" in outputs[0] and "\n- " in outputs[0]
    assert stats.translated == stats.unique_segments == 5
    assert [len(batch) for batch in seen] == [2, 3]  # the short ones share one batch of the same padded size
    lengths = [len(text) for batch in seen for text in batch]
    assert lengths == sorted(lengths, reverse=True)


def test_hf_backend_with_cache_loads_no_model_the_second_time(m2m100, tmp_path):
    from clo_recipes.translation.hf_seq2seq import Seq2SeqTranslator

    texts = ["The cat sits on the mat.", "Water boils."]
    with TranslationCache(tmp_path / "c.sqlite") as cache:
        first, _ = translate_texts(texts, Seq2SeqTranslator(str(m2m100), max_new_tokens=4), src="en", tgt="it",
                                   cache=cache, max_segment_chars=400)
        warm = Seq2SeqTranslator(str(m2m100), max_new_tokens=4)
        second, stats = translate_texts(texts, warm, src="en", tgt="it", cache=cache, max_segment_chars=400)
    assert second == first and stats.cached == 2 and warm._model is None


def test_marian_opus_model_translates(marian):
    from clo_recipes.translation.hf_seq2seq import Seq2SeqTranslator

    assert detect_family(str(marian)) == "opus-mt"
    translator = Seq2SeqTranslator(str(marian), max_new_tokens=5)
    outputs = translator.translate(["The cat sits.", "Water boils at one hundred degrees."], "en", "it")
    assert len(outputs) == 2 and all(isinstance(text, str) for text in outputs)
    assert outputs == translator.translate(["The cat sits.", "Water boils at one hundred degrees."], "en", "it")


# --------------------------------------------------------------------------- language support
def section(**values):
    base = dict(backend="hf", model=None, revision=None, memory_file=None, round_trip=False)
    return SimpleNamespace(**{**base, **values})


def test_support_check_names_the_supported_codes(m2m100):
    check_language_support(section(model="facebook/m2m100_1.2B"), "th")
    with pytest.raises(CloError) as error:
        check_language_support(section(model="facebook/m2m100_1.2B"), "te")
    assert "cannot translate into Telugu" in str(error.value) and "th, ja" in error.value.problems[0].hint
    check_language_support(section(model="facebook/nllb-200-distilled-600M"), "te")
    check_language_support(section(model="google/madlad400-3b-mt"), "yo")
    with pytest.raises(CloError, match="translates into 'de', not Italian"):
        check_language_support(section(model="Helsinki-NLP/opus-mt-en-de"), "it")
    check_language_support(section(model="Helsinki-NLP/opus-mt-tc-big-en-it"), "it")
    check_language_support(section(model="Helsinki-NLP/opus-mt-en-ROMANCE"), "it")
    with pytest.raises(CloError, match="not a seq2seq translator"):
        check_language_support(section(model="facebook/mbart-large-50-many-to-many-mmt"), "it")
    check_language_support(section(backend="hf-causal", model="Qwen/Qwen2.5-7B-Instruct"), "te")
    # A local folder is recognised from its config.
    assert detect_family(str(m2m100)) == "m2m100"
    with pytest.raises(CloError, match="cannot translate into Telugu"):
        check_language_support(section(model=str(m2m100)), "te")
    assert opus_target("Helsinki-NLP/opus-mt-en-mul") is None


def test_support_check_reads_the_memory_file(tmp_path):
    memory = tmp_path / "m.jsonl"
    memory.write_text(json.dumps({"en": "Hi", "it": "Ciao"}) + "\n", encoding="utf-8")
    check_language_support(section(backend="memory", memory_file=str(memory)), "it")
    with pytest.raises(CloError, match="has no 'es' field"):
        check_language_support(section(backend="memory", memory_file=str(memory)), "es")


# --------------------------------------------------------------------------- hf-causal
def test_causal_llm_prompts_with_chat_template_and_examples(tmp_path):
    from clo_recipes.testing.tiny import build_tiny_llama
    from clo_recipes.translation.hf_causal import CausalTranslator

    model = build_tiny_llama(tmp_path / "llm")
    translator = CausalTranslator(str(model), max_new_tokens=5, examples=[("Good morning.", "Buenos días.")])
    prompt = translator.prompts(["Where is the station?"], "en", "es")[0]
    assert prompt.startswith("<|im_start|>system\nYou are a professional translator.")
    assert "from English into Spanish" in prompt
    assert "<|im_start|>user\nGood morning.<|im_end|>\n<|im_start|>assistant\nBuenos días.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>user\nWhere is the station?<|im_end|>\n<|im_start|>assistant\n")
    alone = translator.translate(["Where is the station?"], "en", "es")
    batch = translator.translate(["Where is the station?", "The dog runs in the park every morning."], "en", "es")
    assert len(batch) == 2 and batch[0] == alone[0]  # left padding leaves the row unchanged


# --------------------------------------------------------------------------- openai
class FakeEndpoint:
    """An OpenAI-compatible server on 127.0.0.1 that 'translates' by tagging the text; it can
    answer the first requests with scripted failures and insist on an API key."""

    def __init__(self, failures: list[int] | None = None, require_key: str | None = None, delay_s: float = 0.0):
        self.failures = list(failures or [])
        self.require_key = require_key
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    failure = owner.failures.pop(0) if owner.failures else None
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    time.sleep(owner.delay_s)
                    if owner.require_key and self.headers.get("Authorization") != f"Bearer {owner.require_key}":
                        return self.reply(401, {"error": {"message": "invalid api key"}})
                    if failure:
                        return self.reply(failure, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                    text = body["messages"][-1]["content"]
                    self.reply(200, {"choices": [{"message": {"role": "assistant", "content": f"[es] {text}"}}]})
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def reply(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def openai_translator(url, **kwargs):
    from clo_recipes.translation.openai_compat import OpenAITranslator

    return OpenAITranslator(url, "served-model", **{"backoff_s": 0.01, "api_key_env": "CLO_TEST_KEY", **kwargs})


def test_openai_backend_translates_concurrently_and_keeps_placeholders(monkeypatch, tmp_path):
    monkeypatch.setenv("CLO_TEST_KEY", "sk-test-abc")
    texts = [f"Sentence {n} uses `code_{n}` here." for n in range(12)]
    with FakeEndpoint(delay_s=0.05) as server:
        translator = openai_translator(server.url, concurrency=4)
        with TranslationCache(tmp_path / "c.sqlite") as cache:
            outputs, stats = translate_texts(texts, translator, src="en", tgt="es", cache=cache, max_segment_chars=400)
    assert outputs[3] == "[es] Sentence 3 uses `code_3` here."
    assert stats.translated == 12 and len(server.requests) == 12
    assert 1 < server.max_in_flight <= 4
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test-abc"
    assert request["body"]["model"] == "served-model" and request["body"]["temperature"] == 0
    assert "into Spanish" in request["body"]["messages"][0]["content"]
    assert request["body"]["messages"][-1]["content"].endswith("uses [[0]] here.")


def test_openai_backend_retries_rate_limits_and_server_errors(monkeypatch):
    monkeypatch.delenv("CLO_TEST_KEY", raising=False)
    with FakeEndpoint(failures=[429, 503, 429]) as server:
        translator = openai_translator(server.url, concurrency=1, max_retries=3)
        assert translator.translate(["Hello there."], "en", "es") == ["[es] Hello there."]
        assert len(server.requests) == 4  # three failures, then the answer
    with FakeEndpoint(failures=[429, 429, 429]) as server:
        translator = openai_translator(server.url, concurrency=1, max_retries=2)
        with pytest.raises(CloError, match="failed after 3 attempts: HTTP 429"):
            translator.translate(["Hello there."], "en", "es")


def test_openai_backend_key_errors_are_clear_and_never_show_the_key(monkeypatch):
    from clo_recipes.translation.openai_compat import OpenAITranslator

    monkeypatch.delenv("CLO_TEST_KEY", raising=False)
    with pytest.raises(CloError, match=r"needs an API key, and \$CLO_TEST_KEY is not set"):
        OpenAITranslator("https://api.example.com/v1", "m", api_key_env="CLO_TEST_KEY")
    with FakeEndpoint(require_key="sk-right-key") as server:
        with pytest.raises(CloError, match=r"API key from \$CLO_TEST_KEY is not set"):
            openai_translator(server.url).translate(["Hi there."], "en", "es")
        monkeypatch.setenv("CLO_TEST_KEY", "sk-wrong-key-123")
        with pytest.raises(CloError) as error:
            openai_translator(server.url).translate(["Hi there."], "en", "es")
    assert "was rejected" in str(error.value) and "sk-wrong-key-123" not in str(error.value)


def test_openai_endpoint_down_is_an_error_and_the_cache_keeps_finished_batches(monkeypatch, tmp_path):
    monkeypatch.delenv("CLO_TEST_KEY", raising=False)
    texts = [f"Text {n} to translate." for n in range(8)]
    with FakeEndpoint() as server:
        url = server.url
        with TranslationCache(tmp_path / "c.sqlite") as cache:
            translate_texts(texts[:4], openai_translator(url, concurrency=1, batch_size=1), src="en", tgt="es",
                            cache=cache, max_segment_chars=400)
    with TranslationCache(tmp_path / "c.sqlite") as cache, pytest.raises(CloError, match="failed after 2 attempts"):
        translate_texts(texts, openai_translator(url, concurrency=1, max_retries=1), src="en", tgt="es",
                        cache=cache, max_segment_chars=400)
    with TranslationCache(tmp_path / "c.sqlite") as cache:
        assert cache.count() == 4


def test_few_shot_examples_come_from_the_memory_file(tmp_path):
    from clo_recipes.translation.backends import few_shot_examples

    memory = tmp_path / "examples.jsonl"
    memory.write_text("".join(json.dumps({"en": f"Example {n}.", "th": f"ตัวอย่าง {n}"}, ensure_ascii=False) + "\n"
                              for n in range(3)), encoding="utf-8")
    chosen = SimpleNamespace(few_shot=2, memory_file=str(memory))
    assert few_shot_examples(chosen, "en", "th") == [("Example 0.", "ตัวอย่าง 0"), ("Example 1.", "ตัวอย่าง 1")]
    assert few_shot_examples(SimpleNamespace(few_shot=0, memory_file=None), "en", "th") == []
    with pytest.raises(CloError, match="few_shot is 5 but examples.jsonl holds 3 entries"):
        few_shot_examples(SimpleNamespace(few_shot=5, memory_file=str(memory)), "en", "th")
