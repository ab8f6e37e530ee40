"""One OpenAI-compatible `/chat/completions` client on the standard library (urllib), shared
by the `openai` translation backend and the LLM judge, so both retry and fail the same way.

- 408, 409, 429 and 5xx answers, timeouts and dropped connections are retried with
  exponential backoff and jitter, honouring `Retry-After`, up to `max_retries` times.
- A host that does not resolve is never retried; a refused connection is retried only when
  the caller asks (a local vLLM server still starting up is worth waiting for during a long
  translation, not for an optional judge).
- Failures are an `EndpointError` with a `kind` the caller turns into its own message; the
  API key never appears in one. The detail is the server's own `error.message` when it sends
  one (vLLM, OpenAI), so a wrong model name or an over-long prompt reads as the server said it.
- A prompt longer than the served context (HTTP 400 naming the context length) is kind
  `too_long`: retrying cannot help, and a caller may skip that one request and go on.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0

ErrorKind = Literal["auth", "not_found", "too_long", "unreachable", "bad_reply", "failed"]

# How vLLM (and OpenAI) word a 400 for a prompt (plus max_tokens) the context cannot hold.
TOO_LONG = re.compile(r"maximum context length|max_model_len|context_length_exceeded|too long", re.I)


def is_loopback(endpoint: str) -> bool:
    """An endpoint on this machine (a local vLLM server) may run without an API key."""
    host = urllib.parse.urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EndpointError(Exception):
    """The request cannot succeed: `kind` says why (auth, not_found, unreachable, bad_reply,
    failed), `attempts` how many requests were made."""

    def __init__(self, kind: ErrorKind, detail: str, *, status: int | None = None, attempts: int = 1):
        super().__init__(detail)
        self.kind, self.detail, self.status, self.attempts = kind, detail, status, attempts


class _Retryable(Exception):
    def __init__(self, kind: ErrorKind, detail: str, wait_s: float | None = None):
        super().__init__(detail)
        self.kind, self.wait_s = kind, wait_s


class ChatEndpoint:
    """`complete(messages) -> str` against `<endpoint>/chat/completions`, greedy decoding."""

    def __init__(self, endpoint: str, model: str, api_key: str | None, *, timeout_s: float = 120.0,
                 max_retries: int = 3, max_tokens: int = 512, backoff_s: float = 1.0,
                 retry_refused: bool = True):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.timeout_s, self.max_retries, self.max_tokens = timeout_s, max_retries, max_tokens
        self.backoff_s, self.retry_refused = backoff_s, retry_refused

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = f"HTTP {error.code}: " + _server_message(error.read().decode("utf-8", errors="replace"))
            if error.code in RETRYABLE_STATUS:
                retry_after = error.headers.get("Retry-After") if error.headers else None
                wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
                raise _Retryable("failed", detail, wait) from None
            kind: ErrorKind = ("auth" if error.code in (401, 403) else "not_found" if error.code == 404
                               else "too_long" if error.code in (400, 413) and TOO_LONG.search(detail) else "failed")
            raise EndpointError(kind, detail, status=error.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, socket.timeout,
                http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            # A host that does not resolve will not start resolving by waiting.
            if isinstance(reason, socket.gaierror) or (
                    isinstance(reason, ConnectionRefusedError) and not self.retry_refused):
                raise EndpointError("unreachable", f"{type(reason).__name__}: {reason}") from None
            raise _Retryable("unreachable", f"{type(reason).__name__}: {reason}") from None
        except json.JSONDecodeError as error:
            raise _Retryable("bad_reply", f"reply is not JSON ({error.msg})") from None

    def complete(self, messages: list[dict[str, str]]) -> str:
        return self.chat(messages)[0]

    def chat(self, messages: list[dict[str, str]]) -> tuple[str, int | None]:
        """(the reply's text, its completion tokens as the server counted them, if it says)."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._post(body)
            except EndpointError as error:
                error.attempts = attempt + 1
                raise
            except _Retryable as problem:
                if attempt == self.max_retries:
                    raise EndpointError(problem.kind, str(problem), attempts=attempt + 1) from None
                wait = problem.wait_s if problem.wait_s is not None else self.backoff_s * 2 ** attempt
                time.sleep(min(wait, MAX_BACKOFF_S) * (1 + 0.1 * random.random()))
                continue
            try:
                text = (reply["choices"][0]["message"]["content"] or "").strip()
                return text, (reply.get("usage") or {}).get("completion_tokens")
            except (KeyError, IndexError, TypeError):
                raise EndpointError("bad_reply", f"not a chat completion: {json.dumps(reply)[:200]}",
                                    attempts=attempt + 1) from None
        raise AssertionError("unreachable")


def _server_message(body: str) -> str:
    """The `error.message` of an OpenAI-style error body, else the body's start (one line)."""
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (json.JSONDecodeError, AttributeError):
        message = None
    text = message if isinstance(message, str) and message else body
    return " ".join(text.split())[:300]
