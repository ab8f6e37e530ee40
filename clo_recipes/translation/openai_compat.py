"""`openai` backend: any OpenAI-compatible `/chat/completions` endpoint (vLLM, hosted APIs).

- One request per segment, `translation.concurrency` in flight (threads: the work is I/O).
- Requests go through `clo_recipes.chat_endpoint` (the judge uses the same client): rate
  limits, server errors, timeouts and refused connections are retried with exponential
  backoff (honouring `Retry-After`), up to `translation.max_retries` times.
- Every finished translation is cached as it arrives (`keep`), so a server that dies mid-batch
  costs only the requests in flight.
- The key is read from the environment variable named by `translation.api_key_env`, never
  from the recipe, and never appears in logs or errors. A loopback endpoint (a local vLLM
  server) may run without one; anything else needs it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable

from clo_recipes.chat_endpoint import ChatEndpoint, EndpointError, is_loopback
from clo_recipes.errors import CloError
from clo_recipes.recipe.languages import get_language

from .base import Translator
from .cache import TranslatorIdentity
from .prompting import prompt_settings, translation_messages


class OpenAITranslator(Translator):
    keeps_each = True  # translate(..., keep=) caches each finished request (see the pipeline)

    def __init__(self, endpoint: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 5, max_tokens: int = 512, batch_size: int = 16,
                 examples: list[tuple[str, str]] | None = None, backoff_s: float = 1.0):
        self.model, self.api_key_env = model, api_key_env
        self.api_key = os.environ.get(api_key_env) or None
        if self.api_key is None and not is_loopback(endpoint):
            raise CloError(f"translation.endpoint {endpoint} needs an API key, and ${api_key_env} is not set",
                           hint=f"export {api_key_env}=<your key> (translation.api_key_env names the variable; "
                                "the key itself never goes into the recipe)")
        self.client = ChatEndpoint(endpoint, model, self.api_key, timeout_s=timeout_s, max_retries=max_retries,
                                   max_tokens=max_tokens, backoff_s=backoff_s)
        self.concurrency = concurrency
        self.examples = list(examples or [])
        # Enough requests per batch to keep every connection busy; each translation is cached as it lands.
        self.batch_size = max(batch_size, concurrency * 4)
        self.identity = TranslatorIdentity("openai", model, "", prompt_settings(self.examples, max_tokens))

    def complete(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.client.complete(messages)
        except EndpointError as error:
            raise self._explain(error) from None

    def _explain(self, error: EndpointError) -> CloError:
        url = self.client.url
        if error.kind == "auth":
            state = "is not set" if self.api_key is None else "was rejected"
            return CloError(f"translation endpoint {url} refused the request (HTTP {error.status}): "
                            f"the API key from ${self.api_key_env} {state}", hint=f"export {self.api_key_env}=<a valid key>")
        if error.kind == "not_found":
            return CloError(f"translation endpoint or model not found (HTTP 404 at {url}, model {self.model!r}): "
                            f"{error.detail}", hint="check translation.endpoint (it ends in /v1) and translation.model")
        if error.kind == "too_long":
            return CloError(f"a segment is too long for the context of {self.model!r} at {url}: {error.detail}",
                            hint="lower translation.max_segment_chars (segments are split at sentence ends), "
                                 "lower translation.max_new_tokens, or serve the model with a larger --max-model-len; "
                                 "finished translations are cached")
        if error.kind == "unreachable" and error.attempts == 1:
            return CloError(f"translation endpoint {url} unreachable ({error.detail})",
                            hint="check translation.endpoint")
        if error.attempts > 1:
            return CloError(f"translation endpoint {url} failed after {error.attempts} attempts: {error.detail}",
                            hint="finished translations are cached; re-run to continue once the endpoint is up")
        return CloError(f"translation request to {url} failed ({error.detail})")

    # ------------------------------------------------------------------ a batch
    def translate(self, texts: list[str], src: str, tgt: str,
                  keep: Callable[[str, str], None] | None = None) -> list[str]:
        """`keep(text, translation)` hears of each translation as it arrives (in this thread):
        the pipeline caches it there, so a request that fails for good loses only the
        requests still in flight, never the batch's finished ones."""
        src_name, tgt_name = get_language(src).name, get_language(tgt).name
        chats = [translation_messages(text, src_name, tgt_name, self.examples) for text in texts]
        results: list[str | None] = [None] * len(texts)
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="translate")
        futures = {executor.submit(self.complete, chat): index for index, chat in enumerate(chats)}

        def land(future, index: int) -> None:
            results[index] = future.result()
            if keep is not None:
                keep(texts[index], results[index])

        try:
            for future in as_completed(futures):
                land(future, futures[future])
        except KeyboardInterrupt:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        except BaseException:
            # Send nothing new; keep what the requests already in flight bring back.
            for pending in futures:
                pending.cancel()
            for future, index in futures.items():
                if not future.cancelled() and results[index] is None:
                    try:
                        land(future, index)
                    except Exception:
                        pass
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        return [result if result is not None else "" for result in results]
