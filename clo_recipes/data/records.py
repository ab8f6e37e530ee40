"""The unit every source format is converted to, and where a raw record came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from clo_recipes.errors import CloError


@dataclass(frozen=True)
class RawRecord:
    """One record as read from a source, with a human-readable position for error messages."""

    where: str  # e.g. "data.jsonl line 12", "OpenAssistant/oasst1 row 3"
    data: dict[str, Any]


@dataclass(frozen=True)
class Sample:
    """A single-turn English instruction sample."""

    id: str
    prompt: str
    response: str

    def as_row(self) -> dict[str, str]:
        return {"id": self.id, "prompt": self.prompt, "response": self.response}


def content_id(prompt: str, response: str) -> str:
    """A stable id for records that carry none: the same text always gets the same id."""
    digest = hashlib.sha256(f"{prompt}\x00{response}".encode("utf-8")).hexdigest()
    return f"s-{digest[:12]}"


def record_id(record: RawRecord, prompt: str, response: str, key: str = "id") -> str:
    """The record's own id if it has one, else a content hash."""
    value = record.data.get(key)
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    return content_id(prompt, response)


def text_field(record: RawRecord, field: str, fmt: str, *, required: bool = True) -> str | None:
    """`record[field]` as text; a missing or non-text required field names the record."""
    if field not in record.data or record.data[field] is None:
        if not required:
            return None
        keys = ", ".join(sorted(map(str, record.data))) or "none"
        raise CloError(
            f"{record.where}: missing field {field!r} for data.format {fmt!r}",
            hint=f"the record has fields: {keys}; set data.format (or data.fields for 'pairs') to match the file",
        )
    value = record.data[field]
    if not isinstance(value, str):
        raise CloError(f"{record.where}: field {field!r} is {type(value).__name__}, not text (data.format {fmt!r})")
    return value


def unique_ids(samples: Iterable[Sample]) -> Iterator[Sample]:
    """Samples with ids made unique in order (`x`, `x~2`, ...): the later stages key on ids."""
    seen: dict[str, int] = {}
    for sample in samples:
        count = seen.get(sample.id, 0) + 1
        seen[sample.id] = count
        yield sample if count == 1 else Sample(f"{sample.id}~{count}", sample.prompt, sample.response)
