"""Plan-time checks of the generation backend and the judge (named in the stage table).

Torch-free and quick: a configured server Python must exist; an endpoint must be set with its
model name, and when the endpoint answers `GET /models` within a few seconds, the model must be
one it serves (an endpoint that is not up yet is not an error at plan time: the stage waits
and retries, and says so if it never comes).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from clo_recipes.chat_endpoint import is_loopback
from clo_recipes.errors import CloError
from clo_recipes.model_ref import locate_model
from clo_recipes.recipe.backends import load_function
from clo_recipes.recipe.generation_backends import AUTO, backend, candidates

from .vllm_server import LORA_RANKS, check_python

PROBE_TIMEOUT_S = 3.0
NEEDS_HINTS = {"endpoint": "set eval.endpoint (e.g. http://127.0.0.1:8000/v1)",
               "endpoint_model": "set eval.endpoint_model (the name the server serves)"}


def served_models(endpoint: str, api_key: str | None) -> list[str] | None:
    """The model ids `<endpoint>/models` lists, or None when it cannot be asked now."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(endpoint.rstrip("/") + "/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as reply:
            return [entry["id"] for entry in json.loads(reply.read()).get("data", [])]
    except (OSError, ValueError, KeyError, TypeError, urllib.error.HTTPError):
        return None


def check_model_served(endpoint: str, model: str, api_key: str | None, field: str) -> None:
    served = served_models(endpoint, api_key)
    if served is not None and model not in served:
        raise CloError(f"{field} {model!r} is not served at {endpoint} (it serves: {', '.join(served) or 'nothing'})",
                       hint=f"set {field} to one of those names (vllm: --served-model-name)")


def check_recipe(recipe) -> None:
    """The evaluate stage's backend check (blamed on `eval.generation_backend`): the registry's
    needed fields and check for the backend asked for (`auto` is checked when it runs: it falls
    back to transformers when no server is there)."""
    settings = recipe.eval
    if not {"fidelity", "judge"} & set(settings.suites):
        return  # nothing is generated
    if settings.generation_backend == AUTO:
        return
    entry = backend(settings.generation_backend)
    missing = entry.missing(settings, entry.needs, "eval", "eval.generation_backend")
    if missing:
        raise CloError(missing, hint="; ".join(NEEDS_HINTS.get(field, f"set eval.{field}") for field in entry.needs))
    if entry.check:
        load_function(entry.check)(recipe, field="eval.generation_backend")


def check_judge(recipe) -> None:
    """The judge stage's check (blamed on `eval.judge.model`): the judge backend's needed fields
    and its check, so a wrong model name or a missing server Python fails at plan time instead
    of after every answer is generated."""
    judge = recipe.eval.judge
    entry = backend(judge.backend)
    missing = entry.missing(judge, entry.judge_needs, "eval.judge", "eval.judge.backend")
    if missing:
        raise CloError(missing, hint="set eval.judge.model to the judge's hub id or local folder")
    if entry.check:
        load_function(entry.check)(recipe, field="eval.judge.backend")


def max_lora_rank_arg(args: list[str]) -> str | None:
    """The value of `--max-lora-rank N` / `--max-lora-rank=N` in a server's extra arguments (the last wins,
    as in vLLM's parser), or None."""
    found = None
    for index, arg in enumerate(args):
        if arg == "--max-lora-rank":
            found = args[index + 1] if index + 1 < len(args) else ""
        elif arg.startswith("--max-lora-rank="):
            found = arg.partition("=")[2]
    return found


def check_lora_rank(recipe) -> str | None:
    """A LoRA arm served by the managed server as base + adapter must fit the server's
    `--max-lora-rank` (blamed on `eval.vllm.args` when they set one). An adapter above vLLM's
    largest rank is merged on disk instead (returned as a note for the plan)."""
    settings, adapter = recipe.eval, recipe.adapter
    if (adapter.kind == "full" or not {"fidelity", "judge"} & set(settings.suites)
            or not any(entry.serves_adapters for entry in candidates(settings.generation_backend))):
        return None
    if adapter.r > LORA_RANKS[-1]:
        return (f"adapter.r {adapter.r} is above vLLM's largest --max-lora-rank ({LORA_RANKS[-1]}): an evaluate "
                "stage served by vLLM merges each LoRA arm into its folder first (metrics.json: generation.merged)")
    given = max_lora_rank_arg(list(settings.vllm.args))
    if given is None:
        return None  # the engine passes the smallest rank vLLM accepts that holds adapter.r
    accepted = ", ".join(map(str, LORA_RANKS))
    if not given.isdigit() or int(given) not in LORA_RANKS:
        raise CloError(f"--max-lora-rank {given or '(no value)'} in eval.vllm.args is not a rank vLLM accepts",
                       hint=f"use one of {accepted}, or remove it (the engine picks the smallest that holds adapter.r)")
    if adapter.r > int(given):
        fits = next(rank for rank in LORA_RANKS if rank >= adapter.r)
        raise CloError(f"the LoRA adapter's rank (adapter.r = {adapter.r}) is above --max-lora-rank {given} in "
                       "eval.vllm.args: the vLLM server could not load the trained adapter",
                       hint=f"raise it to --max-lora-rank {fits} in eval.vllm.args, remove it (the engine picks the "
                            f"smallest rank that holds adapter.r), or lower adapter.r to {given}")
    return None


# Checks the registry names (`recipe/generation_backends.py`).
def check_server(recipe, *, field: str) -> None:
    """A managed vLLM server needs a Python that runs it; the judge's, a model it can load."""
    check_python(recipe.eval.vllm.python, asked_by=field)
    if field == "eval.judge.backend" and locate_model(recipe.eval.judge.model).kind == "gguf":
        raise CloError(f"vLLM cannot serve the judge model {recipe.eval.judge.model!r} (a GGUF file)",
                       hint="set eval.judge.model to a hub id or a model folder, or use eval.judge.backend: endpoint")


def check_endpoint(recipe, *, field: str) -> None:
    """A server the user runs: an API key unless it is local, and the model name it serves."""
    if field == "eval.judge.backend":
        judge = recipe.eval.judge
        if judge.endpoint and judge.model:  # unset: the judge stage skips and says why
            check_model_served(judge.endpoint, judge.model, os.environ.get(judge.api_key_env) or None,
                               "eval.judge.model")
        return
    settings = recipe.eval
    api_key = os.environ.get(settings.api_key_env) or None
    if api_key is None and not is_loopback(settings.endpoint):
        raise CloError(f"eval.endpoint {settings.endpoint} needs an API key, and ${settings.api_key_env} is unset",
                       hint=f"export {settings.api_key_env}=<your key> (eval.api_key_env names the variable)")
    check_model_served(settings.endpoint, settings.endpoint_model, api_key, "eval.endpoint_model")
