"""One interface for answer generation: transformers `generate`, vLLM's offline engine, or an
OpenAI-compatible server (a `vllm serve` process, another machine, a hosted API).

Every suite that needs answers (fidelity, judge) calls `Generator.generate(prompts)` with
plain user prompts and gets the assistant's answers back, greedy, in the same order. The
prompt is rendered with the model's chat template, so the model sees what a chat user sends.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Protocol, Sequence


class Generator(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], progress: Any = None) -> list[str]:
        """Greedy answers to single-turn user prompts, in input order; `progress.update(n)`
        (a progress bar), if given, hears of answers as they are done."""
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

    def generate(self, prompts: Sequence[str], progress: Any = None) -> list[str]:
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
            if progress is not None:
                progress.update(len(batch))
        return answers


class VLLMGenerator:
    """vLLM's offline engine: the same greedy answers, much faster on a GPU.

    `adapter` is a LoRA adapter folder applied on top of `model` (vLLM serves LoRA natively,
    so the adapter is never merged).
    """

    name = "vllm"

    def __init__(self, model: str, *, tokenizer: str | None, chat_template: str | None,
                 max_new_tokens: int, dtype: str = "auto", adapter: str | None = None,
                 lora_rank: int | None = None, max_model_len: int | None = None):
        from vllm import LLM, SamplingParams

        engine_args: dict[str, Any] = {"model": model, "dtype": dtype, "seed": 0}
        if tokenizer:
            engine_args["tokenizer"] = tokenizer
        if max_model_len:
            engine_args["max_model_len"] = max_model_len
        if adapter:
            engine_args.update(enable_lora=True, max_lora_rank=max(lora_rank or 16, 8))
        self.engine = LLM(**engine_args)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.chat_template = chat_template
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("trained", 1, adapter)

    def generate(self, prompts: Sequence[str], progress: Any = None) -> list[str]:
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        outputs = self.engine.chat(
            conversations,
            self.sampling,
            chat_template=self.chat_template,
            lora_request=self.lora,
            use_tqdm=False,
        )
        if progress is not None:
            progress.update(len(outputs))
        return [output.outputs[0].text.strip() for output in outputs]

    def close(self) -> None:
        """Free the GPU for the scoring model loaded after generation."""
        import gc

        import torch

        del self.engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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
                "not_found": "check the endpoint (it ends in /v1) and that the server serves this model name "
                             "(vllm: --served-model-name)",
                "too_long": "lower eval.max_new_tokens or serve the model with a larger --max-model-len",
                "auth": "export the API key the server expects",
            }.get(error.kind, "start the server (or wait for /health), then re-run: finished answers are kept")
            raise StageError(f"generation endpoint {url} (model {self.model!r}) failed after "
                             f"{error.attempts} attempt(s): {error.detail}", hint=hint) from None

    def generate(self, prompts: Sequence[str], progress: Any = None) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="generate") as pool:
            futures = [pool.submit(self._answer, prompt) for prompt in prompts]
            answers = []
            try:
                for future in futures:
                    text, tokens = future.result()
                    answers.append(text)
                    self.completion_tokens += tokens or 0
                    if progress is not None:
                        progress.update(1)
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
        return answers


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_backend(requested: str) -> str:
    """`auto` -> vLLM when usable, else transformers; an explicit `vllm` must be usable."""
    if requested == "transformers":
        return "transformers"
    usable = vllm_usable()
    if requested == "vllm" and not usable:
        from clo_recipes.errors import StageError

        raise StageError(
            "eval.generation_backend is `vllm` but vLLM is not installed or no CUDA GPU is visible",
            hint="pip install vllm on a GPU machine, or set eval.generation_backend: auto",
        )
    return "vllm" if usable else "transformers"
