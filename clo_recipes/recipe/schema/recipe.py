"""The top-level recipe."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from .adapter import AdapterSection
from .base import Section
from .data import DataSection
from .evaluation import EvalSection
from .hardware import HardwareSection
from .method import MethodSection
from .model import ModelSection
from .train import TrainSection
from .translation import TranslationSection

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class Recipe(Section):
    """A clo-recipes recipe: one language-transfer run, from data to report."""

    name: str = Field(description="Run name; outputs go to `<output_dir>/<name>/`.")
    output_dir: str = Field(default="runs", description="Parent folder of run directories (relative to the working directory).")
    cache_dir: str | None = Field(
        default=None,
        description="Shared cache (translations, judge verdicts); default `$CLO_RECIPES_CACHE` or `~/.cache/clo-recipes`.",
    )
    model: ModelSection = Field(description="The base model to transfer.")
    language: str = Field(
        description="Target language: ISO 639-1 (`th`), ISO 639-3 (`tha`) or English name (`Thai`)."
    )
    data: DataSection = Field(description="English instruction data.")
    translation: TranslationSection = Field(description="Machine translation of the data.")
    method: MethodSection = Field(default_factory=MethodSection, description="Training objective.")
    adapter: AdapterSection = Field(default_factory=AdapterSection, description="Trainable weights.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation suites.")
    hardware: HardwareSection = Field(default_factory=HardwareSection, description="Hardware profile and overrides.")

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        from ..languages import get_language  # registry raises "did you mean"

        language = get_language(value)
        if language.iso1 == "en":
            raise ValueError("the target language must not be English (CLO transfers from English)")
        return language.iso1

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names a folder)")
        return value

    @model_validator(mode="after")
    def _judge_baseline_exists(self) -> "Recipe":
        judge = self.eval.judge
        arms = {"base", self.method.name, *self.method.baselines}
        looks_like_run_dir = "/" in judge.baseline or judge.baseline.startswith(".")
        if "judge" in self.eval.suites and judge.baseline not in arms and not looks_like_run_dir:
            raise ValueError(
                f"eval.judge.baseline '{judge.baseline}' is not trained by this recipe; use one of "
                f"{sorted(arms)}, a run directory, or add it to method.baselines"
            )
        return self
