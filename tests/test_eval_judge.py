"""The pairwise judge against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clo_recipes.evaluation.judge import (
    ChatClient, Comparison, JudgeUnavailable, VerdictCache, build_messages, judge_comparisons,
    parse_verdict, win_rates)

ANSWERS = re.compile(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\nWhich answer", re.S)


class JudgeHandler(BaseHTTPRequestHandler):
    """A deterministic judge: an answer tagged [good] wins wherever it stands; two [same]
    answers tie; otherwise it always says "A" (a judge with a strong position bias)."""

    def do_POST(self):  # noqa: N802 - http.server API
        server = self.server
        if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
            self._reply(401, {"error": {"message": "invalid api key"}})
            return
        if self.path != "/v1/chat/completions":
            self._reply(404, {"error": {"message": "no such route"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "[long]" in body["messages"][-1]["content"]:  # vLLM's reply to a prompt over max_model_len
            self._reply(400, {"error": {"message": "This model's maximum context length is 2048 tokens. However, "
                                        "your prompt contains at least 2049 input tokens.", "code": 400}})
            return
        answer_a, answer_b = ANSWERS.search(body["messages"][-1]["content"]).groups()
        with server.lock:
            server.seen.append((body["model"], answer_a, answer_b))
        if "[good]" in answer_a and "[good]" not in answer_b:
            verdict = "A"
        elif "[good]" in answer_b and "[good]" not in answer_a:
            verdict = "B."
        elif "[same]" in answer_a and "[same]" in answer_b:
            verdict = "Tie"
        else:
            verdict = "A"
        self._reply(200, {"choices": [{"message": {"role": "assistant", "content": verdict}}]})

    def _reply(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.api_key = "test-key"
    server.seen = []
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


COMPARISONS = [
    Comparison("p1", "es", "Hola", answer="[good] bien", baseline_answer="meh"),          # model wins twice
    Comparison("p2", "es", "Adiós", answer="meh", baseline_answer="[good] mejor"),         # model loses twice
    Comparison("p3", "es", "¿Qué?", answer="[same] uno", baseline_answer="[same] dos"),   # two ties
    Comparison("p4", "en", "Why?", answer="because", baseline_answer="since"),            # position bias
    Comparison("p5", "en", "How?", answer="same text", baseline_answer="same text"),      # identical: no call
]


def test_both_orders_ties_and_position_bias(judge_server, tmp_path):
    client = ChatClient(judge_server.url, "judge-model", "test-key")
    cache = VerdictCache(tmp_path / "verdicts.sqlite")
    records, counters = judge_comparisons(COMPARISONS, client, cache, {"es": "Spanish", "en": "English"})

    # Each differing pair was sent in both orders: the model's answer once as A, once as B.
    assert sorted((a, b) for _, a, b in judge_server.seen) == sorted([
        ("[good] bien", "meh"), ("meh", "[good] bien"),
        ("meh", "[good] mejor"), ("[good] mejor", "meh"),
        ("[same] uno", "[same] dos"), ("[same] dos", "[same] uno"),
        ("because", "since"), ("since", "because")])
    assert counters == {"requests": 8, "cached": 0, "identical": 1, "unreadable": 0, "too_long": 0}

    by_id = {r["id"]: r for r in records}
    assert by_id["p1"]["scores"] == [1.0, 1.0] and by_id["p1"]["score"] == 1.0
    assert by_id["p2"]["scores"] == [0.0, 0.0]
    assert by_id["p3"]["scores"] == [0.5, 0.5] and by_id["p3"]["verdict_model_first"] == "tie"
    # Always "A": the model wins when first and loses when second, which cancels to 0.5.
    assert by_id["p4"]["scores"] == [1.0, 0.0] and by_id["p4"]["score"] == 0.5
    assert by_id["p5"]["scores"] == [0.5, 0.5]

    rates = win_rates(records)
    assert rates["es"]["win_rate"] == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3
    assert (rates["es"]["wins"], rates["es"]["ties"], rates["es"]["losses"]) == (2, 2, 2)
    assert rates["es"]["n"] == 3 and rates["es"]["low"] < 0.5 < rates["es"]["high"]
    assert rates["en"]["win_rate"] == pytest.approx(0.5)
    assert rates["en"]["consistent"] == 0.5  # p4's two orders disagree, p5's agree
    cache.close()


def test_rerun_is_served_from_the_cache(judge_server, tmp_path):
    client = ChatClient(judge_server.url, "judge-model", "test-key")
    first, _ = judge_comparisons(COMPARISONS, client, VerdictCache(tmp_path / "v.sqlite"), {})
    calls = len(judge_server.seen)
    again, counters = judge_comparisons(COMPARISONS, client, VerdictCache(tmp_path / "v.sqlite"), {})
    assert len(judge_server.seen) == calls  # no new request
    assert counters["requests"] == 0 and counters["cached"] == 8
    assert again == first
    # Another judge model is another cache key.
    other = ChatClient(judge_server.url, "other-judge", "test-key")
    _, counters = judge_comparisons(COMPARISONS[:1], other, VerdictCache(tmp_path / "v.sqlite"), {})
    assert counters["requests"] == 2


def test_rejected_key_and_unreachable_endpoint_make_the_judge_unavailable(judge_server, tmp_path):
    cache = VerdictCache(tmp_path / "v.sqlite")
    with pytest.raises(JudgeUnavailable, match="rejected the API key"):
        judge_comparisons(COMPARISONS[:1], ChatClient(judge_server.url, "m", "wrong"), cache, {})
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(JudgeUnavailable, match="unreachable"):
        judge_comparisons(COMPARISONS[:1], ChatClient(f"http://127.0.0.1:{port}/v1", "m", None), cache, {})
    assert time.monotonic() - started < 5  # connection refused is not retried for long


def test_a_prompt_too_long_for_the_judge_costs_only_its_own_verdicts(judge_server, tmp_path):
    client = ChatClient(judge_server.url, "judge-model", "test-key")
    cache = VerdictCache(tmp_path / "v.sqlite")
    long_one = Comparison("p9", "es", "[long] " + "palabra " * 50, answer="x", baseline_answer="y")
    records, counters = judge_comparisons([COMPARISONS[0], long_one], client, cache, {})
    assert counters["too_long"] == 2 and counters["unreadable"] == 2 and counters["requests"] == 4
    assert records[0]["scores"] == [1.0, 1.0]  # the other comparison is judged as before
    assert records[1]["scores"] == [0.5, 0.5] and records[1]["verdict_model_first"] is None
    # Not cached: a judge with a longer context may answer it on a re-run.
    _, counters = judge_comparisons([COMPARISONS[0], long_one], client, cache, {})
    assert counters["cached"] == 2 and counters["requests"] == 2


def test_judge_prompt_penalises_wrong_language_answers():
    messages = build_messages("¿Qué hora es?", "It is noon.", "Es mediodía.", "Spanish")
    text = messages[-1]["content"]
    assert "written in Spanish" in text
    assert "An answer written mainly in a language other than Spanish fails the instruction" in text
    assert text.index("It is noon.") < text.index("Es mediodía.")


@pytest.mark.parametrize("reply, verdict", [
    ("A", "a"), ("b.", "b"), ("Tie", "tie"), ('"B"', "b"), ("Answer B is better", "b"),
    ("It's a tie.", "tie"), ("I cannot decide", None), ("", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_loopback_endpoints_need_no_key():
    from clo_recipes.chat_endpoint import is_loopback

    assert is_loopback("http://127.0.0.1:8000/v1") and is_loopback("http://localhost:8000/v1")
    assert not is_loopback("https://api.openai.com/v1")
