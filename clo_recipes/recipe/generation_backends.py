"""The generation backends of evaluation and the judge, as data: one entry per
`eval.generation_backend` name, read by the schema (names, description, which ones can judge),
the plan-time checks (`check`), the evaluate stage (`open`, `streams`), the judge stage
(`judge`) and lock files (`pins`, `judge_pin`). Adding a backend is one entry here plus its
functions; nothing else dispatches on the name, and `auto` is resolved by `choose` alone.

`check`, `open` and `judge` are "module:function" strings (as in the stage table), so this
layer never imports the evaluation code that implements them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AUTO = "auto"  # not a backend: `choose` picks one per stage


@dataclass(frozen=True)
class GenerationBackend:
    name: str
    description: str  # one clause of the schema's `eval.generation_backend` description
    # "module:function(ctx, subject, load_model)": a context manager yielding (Generator, what
    # metrics.json records); whatever it starts (a server) stops when the block ends.
    open: str
    # Answers arrive one by one (a server: each is checkpointed as it comes, one chunk for
    # all prompts), or in batches (checkpointed every `evaluate.CHECKPOINT_EVERY` prompts).
    streams: bool
    needs: tuple[str, ...] = ()  # `eval.` fields that must be set to generate with it
    # "module:function(recipe, *, field)", raises CloError at plan time; `field` is the
    # setting that asked for the backend (eval.generation_backend or eval.judge.backend).
    check: str | None = None
    # "module:function(ctx, settings)": a context manager yielding (judge ChatClient, what
    # judge.json records); None: this backend cannot judge (the judge needs a chat server).
    judge: str | None = None
    judge_needs: tuple[str, ...] = ()  # `eval.judge.` fields the judge stage needs with it
    judge_description: str = ""  # one clause of the schema's `eval.judge.backend` description
    judge_pin: Literal["served", "model"] | None = None  # how `clo-recipe lock` pins eval.judge.model
    pins: tuple[str, ...] = ()  # packages whose version lock files record when it is used
    serves_adapters: bool = False  # serves a LoRA arm as base + adapter (under eval.vllm's rank limit)

    def missing(self, section: object, fields: tuple[str, ...], prefix: str, asked_by: str) -> str | None:
        """The plan-time message when one of `fields` of `section` (the `prefix` section) is
        unset, else None."""
        if all(getattr(section, field) for field in fields):
            return None
        named = " or ".join(f"{prefix}.{field}" for field in fields)
        return f"{asked_by} is `{self.name}` but {named} is unset"


_SERVING = "clo_recipes.evaluation.serving"
_CHECKS = "clo_recipes.evaluation.backend_checks"

BACKENDS: dict[str, GenerationBackend] = {backend.name: backend for backend in (
    GenerationBackend("transformers", "batched `generate` in the stage", open=f"{_SERVING}:open_transformers",
                      streams=False),
    GenerationBackend("vllm", "a vLLM server the stage starts from `eval.vllm.python`, serving exactly the "
                              "evaluated weights or the base plus its LoRA adapter, stopped when the stage ends",
                      open=f"{_SERVING}:open_managed", streams=True, check=f"{_CHECKS}:check_server",
                      judge=f"{_SERVING}:judge_managed", judge_needs=("model",), judge_pin="model",
                      pins=("vllm",), serves_adapters=True,
                      judge_description="a vLLM server the judge stage starts serving eval.judge.model (a hub id "
                                        "or a local folder) with the eval.vllm settings, stopped when it ends"),
    GenerationBackend("endpoint", "an OpenAI-compatible server you run (`eval.endpoint`, `eval.endpoint_model`)",
                      open=f"{_SERVING}:open_endpoint", streams=True, needs=("endpoint", "endpoint_model"),
                      check=f"{_CHECKS}:check_endpoint", judge=f"{_SERVING}:judge_endpoint", judge_pin="served",
                      judge_description="the server at eval.judge.endpoint (hosted, or one you run) serving "
                                        "eval.judge.model"),
)}
NAMES = tuple(BACKENDS)
JUDGE_NAMES = tuple(name for name, backend in BACKENDS.items() if backend.judge)
# What `auto` picks: the server when it is there and pays off, else the in-process fallback.
_AUTO_SERVER, _AUTO_FALLBACK = "vllm", "transformers"


def backend(name: str) -> GenerationBackend:
    return BACKENDS[name]


def choose(requested: str, *, prompts: int, server_python: str | None, break_even: int) -> GenerationBackend:
    """`auto` -> the managed server when a server Python is available and enough prompts remain
    for its start to pay off (benchmarks/eval_backends.py measures the break-even), else
    transformers; an explicit choice stands (plan time checked it can run)."""
    if requested != AUTO:
        return BACKENDS[requested]
    return BACKENDS[_AUTO_SERVER if server_python is not None and prompts >= break_even else _AUTO_FALLBACK]


def candidates(requested: str) -> tuple[GenerationBackend, ...]:
    """The backends `requested` may run with: itself, or with `auto` the two `choose` picks from."""
    return (BACKENDS[_AUTO_SERVER], BACKENDS[_AUTO_FALLBACK]) if requested == AUTO else (BACKENDS[requested],)


def description() -> str:
    """The schema's description of `eval.generation_backend`, from the entries."""
    return ("How answers are generated: " + "; ".join(f"`{b.name}`: {b.description}" for b in BACKENDS.values())
            + f"; or `{AUTO}`: `{_AUTO_SERVER}` when a server Python is available and there are at least "
              f"`eval.vllm.break_even_prompts` prompts to answer, else `{_AUTO_FALLBACK}`.")


def judge_description() -> str:
    """The schema's description of `eval.judge.backend`, from the entries that can judge."""
    return ("Where the judge's chat server comes from: "
            + "; ".join(f"`{name}`: {BACKENDS[name].judge_description}" for name in JUDGE_NAMES)
            + ". The judge needs a chat server, so only these can judge.")


def refuse_judge(name: str) -> str | None:
    """Why `name` cannot be `eval.judge.backend`, or None when it can."""
    if name in JUDGE_NAMES:
        return None
    accepted = ", ".join(JUDGE_NAMES)
    if name in BACKENDS:
        return f"`{name}` cannot judge: the judge needs a chat server, one of: {accepted}"
    return f"unknown judge backend {name!r}; the judge needs a chat server, one of: {accepted}"
