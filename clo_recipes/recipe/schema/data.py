"""`data:` the English instruction data CLO starts from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Section

SourceFormat = Literal["auto", "pairs", "alpaca", "sharegpt", "messages", "oasst"]


class FieldMap(Section):
    """Custom field names for records that do not follow a known format."""

    prompt: str = Field(default="prompt", description="Field holding the English query.")
    response: str = Field(default="response", description="Field holding the English answer.")
    input: str | None = Field(
        default=None, description="Optional extra context field appended to the query."
    )


class DataSection(Section):
    source: str = Field(
        description=(
            "English SFT data: a hub dataset id (`OpenAssistant/oasst1`) or a local "
            "JSONL / JSON / Parquet / CSV file (relative to the recipe)."
        )
    )
    format: SourceFormat = Field(
        default="auto",
        description=(
            "Record format: `pairs` (prompt/response fields, see `fields`), `alpaca`, "
            "`sharegpt`, `messages` (OpenAI chat), `oasst` (message trees; the top-ranked "
            "reply of each root becomes one single-turn pair), or `auto` to detect."
        ),
    )
    fields: FieldMap = Field(default_factory=FieldMap, description="Field names for `pairs`.")
    config: str | None = Field(default=None, description="Hub dataset config name.")
    split: str = Field(default="train", description="Dataset split to read.")
    revision: str | None = Field(default=None, description="Hub dataset revision; pinned by `lock`.")
    samples: int = Field(
        default=6400,
        ge=1,
        description=(
            "English samples to train on (paper: 200 ... 6,400). Sampling is nested: the "
            "first n of a seed's order, so smaller sets are contained in larger ones."
        ),
    )
    seed: int = Field(
        default=42,
        description=(
            "Seed of the sampling order (which samples are drawn and which are held out). "
            "Sweepable like `train.seed`; a different seed also draws a different held-out set."
        ),
    )
    eval_samples: int = Field(
        default=100,
        ge=0,
        description="Samples held out (never trained on) whose queries the evaluation asks.",
    )
    dedup: bool = Field(default=True, description="Drop exact duplicate queries.")
    min_chars: int = Field(default=1, ge=0, description="Drop samples whose query or answer is shorter.")
    max_chars: int = Field(
        default=6000, ge=1, description="Drop samples whose query or answer is longer."
    )

    @model_validator(mode="after")
    def _bounds(self) -> "DataSection":
        if self.min_chars > self.max_chars:
            raise ValueError("data.min_chars must not exceed data.max_chars")
        return self
