"""`openai` backend: any OpenAI-compatible `/chat/completions` endpoint (vLLM, hosted APIs).

- One request per segment, `translation.concurrency` in flight (threads: the work is I/O).
- 429, 408 and 5xx answers, timeouts and dropped connections are retried with exponential
  backoff (honouring `Retry-After`), up to `translation.max_retries` times.
- The key is read from the environment variable named by `translation.api_key_env`, never
  from the recipe, and never appears in logs or errors. A loopback endpoint (a local vLLM
  server) may run without one; anything else needs it.
Standard library only (urllib), so the backend adds no dependency.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clo_recipes.errors import CloError
from clo_recipes.recipe.languages import get_language

from .base import Translator
from .cache import TranslatorIdentity
from .prompting import prompt_settings, translation_messages

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 60.0


def is_loopback(endpoint: str) -> bool:
    host = urllib.parse.urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Retryable(Exception):
    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.wait_s = wait_s


class OpenAITranslator(Translator):
    def __init__(self, endpoint: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 5, max_tokens: int = 512, batch_size: int = 16,
                 examples: list[tuple[str, str]] | None = None, backoff_s: float = 1.0):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.api_key = os.environ.get(api_key_env) or None
        if self.api_key is None and not is_loopback(endpoint):
            raise CloError(f"translation.endpoint {endpoint} needs an API key, and ${api_key_env} is not set",
                           hint=f"export {api_key_env}=<your key> (translation.api_key_env names the variable; "
                                "the key itself never goes into the recipe)")
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries
        self.max_tokens, self.backoff_s = max_tokens, backoff_s
        self.examples = list(examples or [])
        # Enough requests per batch to keep every connection busy; each batch is cached as it lands.
        self.batch_size = max(batch_size, concurrency * 4)
        self.identity = TranslatorIdentity("openai", model, "", prompt_settings(self.examples, max_tokens))

    # ------------------------------------------------------------------ one request
    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")[:300]
            if error.code in RETRYABLE_STATUS:
                retry_after = error.headers.get("Retry-After") if error.headers else None
                wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
                raise _Retryable(f"HTTP {error.code}: {detail}", wait) from None
            if error.code in (401, 403):
                state = "is not set" if self.api_key is None else "was rejected"
                raise CloError(f"translation endpoint {self.url} refused the request (HTTP {error.code}): "
                               f"the API key from ${self.api_key_env} {state}",
                               hint=f"export {self.api_key_env}=<a valid key>") from None
            if error.code == 404:
                raise CloError(f"translation endpoint or model not found (HTTP 404 at {self.url}, model "
                               f"{self.model!r}): {detail}", hint="check translation.endpoint (it ends in /v1) "
                                                                  "and translation.model") from None
            raise CloError(f"translation request failed (HTTP {error.code}): {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, socket.timeout) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, socket.gaierror):
                raise CloError(f"translation endpoint {self.url}: host not found ({reason})") from None
            raise _Retryable(f"{type(reason).__name__}: {reason}") from None
        except json.JSONDecodeError as error:
            raise _Retryable(f"reply is not JSON ({error.msg})") from None

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._post(body)
                try:
                    return (reply["choices"][0]["message"]["content"] or "").strip()
                except (KeyError, IndexError, TypeError):
                    raise CloError(f"translation endpoint {self.url} sent a reply that is not a chat completion: "
                                   f"{json.dumps(reply)[:200]}") from None
            except _Retryable as problem:
                if attempt == self.max_retries:
                    raise CloError(f"translation endpoint {self.url} failed after {attempt + 1} attempts: {problem}",
                                   hint="finished batches are cached; re-run to continue once the endpoint is up") from None
                wait = problem.wait_s if problem.wait_s is not None else self.backoff_s * 2 ** attempt
                time.sleep(min(wait, MAX_BACKOFF_S) * (1 + 0.1 * random.random()))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ a batch
    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        src_name, tgt_name = get_language(src).name, get_language(tgt).name
        chats = [translation_messages(text, src_name, tgt_name, self.examples) for text in texts]
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="translate")
        futures = [executor.submit(self.complete, chat) for chat in chats]
        try:
            return [future.result() for future in futures]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
