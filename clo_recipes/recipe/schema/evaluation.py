"""`eval:` what is measured after training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section

Suite = Literal["fidelity", "mc", "nll", "judge", "lm_eval"]


class JudgeSection(Section):
    endpoint: str | None = Field(
        default=None, description="OpenAI-compatible base URL of the judge (hosted or local vLLM)."
    )
    model: str | None = Field(default=None, description="Judge model name served at the endpoint.")
    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="Environment variable holding the judge's API key."
    )
    baseline: str = Field(
        default="sft",
        description="Which model each model is judged against: `base`, a method name, or a run directory.",
    )
    concurrency: int = Field(default=4, ge=1, description="Judge requests in flight.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")


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
    generation_backend: Literal["auto", "transformers", "vllm"] = Field(
        default="auto",
        description=(
            "How answers are generated: `transformers` (batched `generate`), `vllm` (offline engine, "
            "CUDA only), or `auto` (vLLM when installed and a GPU is visible, else transformers)."
        ),
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
