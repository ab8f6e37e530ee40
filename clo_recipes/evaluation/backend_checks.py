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

from .vllm_server import check_python

PROBE_TIMEOUT_S = 3.0


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
    """The evaluate stage's backend check (blamed on `eval.generation_backend`)."""
    settings = recipe.eval
    if not {"fidelity", "judge"} & set(settings.suites):
        return  # nothing is generated
    if settings.generation_backend == "vllm":
        check_python(settings.vllm.python)
    elif settings.generation_backend == "endpoint":
        if not settings.endpoint or not settings.endpoint_model:
            raise CloError("eval.generation_backend is `endpoint` but eval.endpoint or eval.endpoint_model is unset",
                           hint="set eval.endpoint (e.g. http://127.0.0.1:8000/v1) and eval.endpoint_model")
        api_key = os.environ.get(settings.api_key_env) or None
        if api_key is None and not is_loopback(settings.endpoint):
            raise CloError(f"eval.endpoint {settings.endpoint} needs an API key, and ${settings.api_key_env} is unset",
                           hint=f"export {settings.api_key_env}=<your key> (eval.api_key_env names the variable)")
        check_model_served(settings.endpoint, settings.endpoint_model, api_key, "eval.endpoint_model")


def check_judge(recipe) -> None:
    """The judge stage's check (blamed on `eval.judge.model`): a wrong model name fails at plan
    time instead of skipping the judge after every answer is generated."""
    judge = recipe.eval.judge
    if judge.endpoint and judge.model:
        check_model_served(judge.endpoint, judge.model, os.environ.get(judge.api_key_env) or None,
                           "eval.judge.model")
