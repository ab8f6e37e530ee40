"""One interface for answer generation: transformers `generate` in the stage, or an
OpenAI-compatible server (the vLLM server the stage starts, see `vllm_server.py`; a server
the user runs elsewhere; a hosted API).

Every suite that needs answers (fidelity, judge) calls `Generator.generate(prompts)` with
plain user prompts and gets the assistant's answers back, greedy, in the same order. The
prompt is rendered with the model's chat template, so the model sees what a chat user sends.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence


class Generator(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], progress: Any = None,
                 on_answer: Callable[[int, str], None] | None = None) -> list[str]:
        """Greedy answers to single-turn user prompts, in input order; `progress.update(n)`
        (a progress bar) and `on_answer(index, answer)`, if given, hear of answers as they
        are done."""
        ...


def render_chat(tokenizer: Any, prompt: str) -> str:
    """The prompt as one user turn plus the assistant header, in the model's chat template."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


class TransformersGenerator:
    """Batched greedy `model.generate` with left padding (the CPU and default GPU path)."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int, batch_size: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[str], progress: Any = None,
                 on_answer: Callable[[int, str], None] | None = None) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        texts = [render_chat(tokenizer, prompt) for prompt in prompts]
        # Longest first: batches hold similar lengths (less padding) and an out-of-memory
        # error, if any, shows up on the first batch rather than after an hour.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        answers: list[str] = [""] * len(texts)
        device = next(self.model.parameters()).device
        self.model.eval()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            # The chat template already carries any BOS the model wants.
            encoded = tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            ).to(device)
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=pad_id,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for index, tokens in zip(batch, new_tokens):
                answers[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
                if on_answer is not None:
                    on_answer(index, answers[index])
            if progress is not None:
                progress.update(len(batch))
        return answers


class EndpointGenerator:
    """Greedy answers from an OpenAI-compatible `/chat/completions` server, `concurrency`
    requests in flight (the server batches them). The server applies the model's chat
    template, so the answers match what `TransformersGenerator` gets from the same weights up
    to the server's numerics. Requests retry like the translation backend's (refused
    connections, 5xx, timeouts; bounded, with backoff); a failure that outlives the retries,
    a wrong model name or a prompt too long for the served context is a `StageError` (answers
    already written to the stage's checkpoint stay there)."""

    name = "endpoint"

    def __init__(self, endpoint: str, model: str, *, api_key: str | None = None, max_new_tokens: int,
                 concurrency: int = 8, timeout_s: float = 300.0, max_retries: int = 3, backoff_s: float = 1.0):
        from clo_recipes.chat_endpoint import ChatEndpoint

        self.client = ChatEndpoint(endpoint, model, api_key, timeout_s=timeout_s, max_retries=max_retries,
                                   max_tokens=max_new_tokens, backoff_s=backoff_s)
        self.model, self.concurrency = model, concurrency
        self.completion_tokens = 0  # as the server counted them, for throughput figures

    def _answer(self, prompt: str) -> tuple[str, int | None]:
        from clo_recipes.chat_endpoint import EndpointError
        from clo_recipes.errors import StageError

        try:
            return self.client.chat([{"role": "user", "content": prompt}])
        except EndpointError as error:
            url = self.client.url
            hint = {
                "not_found": "check eval.endpoint (it ends in /v1) and eval.endpoint_model (the name the server "
                             "serves, vllm: --served-model-name)",
                "too_long": "lower eval.max_new_tokens, or serve a longer context (eval.vllm.max_model_len; "
                            "vllm: --max-model-len)",
                "auth": "export the API key the server expects",
            }.get(error.kind, "start the server (or wait for /health), then re-run: finished answers are kept")
            raise StageError(f"generation endpoint {url} (model {self.model!r}) failed after "
                             f"{error.attempts} attempt(s): {error.detail}", hint=hint) from None

    def _keep(self, future: Any, index: int, answers: list, progress: Any, on_answer: Any) -> None:
        text, tokens = future.result()
        answers[index] = text
        self.completion_tokens += tokens or 0
        if on_answer is not None:
            on_answer(index, text)
        if progress is not None:
            progress.update(1)

    def generate(self, prompts: Sequence[str], progress: Any = None,
                 on_answer: Callable[[int, str], None] | None = None) -> list[str]:
        """Answers in input order; `on_answer(index, answer)` hears of each one as it arrives (in
        the caller's thread), so a caller can keep it before a later request fails."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        answers: list[str | None] = [None] * len(prompts)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="generate") as pool:
            futures = {pool.submit(self._answer, prompt): index for index, prompt in enumerate(prompts)}
            try:
                for future in as_completed(futures):
                    self._keep(future, futures[future], answers, progress, on_answer)
            except KeyboardInterrupt:
                for pending in futures:
                    pending.cancel()
                raise
            except BaseException:
                # One request failed for good: nothing new is sent, but the requests already
                # in flight are waited for and kept, so a re-run asks only for what is missing.
                for pending in futures:
                    pending.cancel()
                for future, index in futures.items():
                    if not future.cancelled() and answers[index] is None:
                        try:
                            self._keep(future, index, answers, progress, on_answer)
                        except Exception:
                            pass
                raise
        return [answer or "" for answer in answers]

