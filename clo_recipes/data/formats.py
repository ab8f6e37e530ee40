"""Record formats -> single-turn English samples.

- `pairs`: one field for the query, one for the answer (`data.fields`, optional extra input);
- `alpaca`: `instruction` (+ `input`) -> `output`; Dolly's `instruction` (+ `context`) ->
  `response` is read the same way;
- `sharegpt`: `conversations: [{from, value}]`, the first human turn and the reply after it;
- `messages`: OpenAI chat `messages: [{role, content}]`, the first user turn and the reply;
- `oasst`: OpenAssistant message trees (see `oasst.py`).

CLO trains on single-turn pairs (the paper uses single-turn OpenAssistant samples), so a
conversation contributes its opening exchange only.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, Iterable, Iterator

from clo_recipes.errors import CloError

from .oasst import oasst_samples, oasst_kind
from .records import RawRecord, Sample, record_id, text_field

FORMATS = ("pairs", "alpaca", "sharegpt", "messages", "oasst")

_USER_ROLES = {"human", "user", "prompter"}
_ASSISTANT_ROLES = {"gpt", "assistant", "bot", "chatgpt", "model"}


def detect_format(record: RawRecord, fields: Any) -> str:
    """The format of a source, judged from its first record."""
    data = record.data
    if oasst_kind(data):
        return "oasst"
    if isinstance(data.get("messages"), list):
        return "messages"
    if isinstance(data.get("conversations"), list):
        return "sharegpt"
    if "instruction" in data and ("output" in data or "response" in data):
        return "alpaca"
    if fields.prompt in data and fields.response in data:
        return "pairs"
    raise CloError(
        f"{record.where}: cannot tell the data format from fields {', '.join(sorted(map(str, data)))}",
        hint="set data.format (pairs, alpaca, sharegpt, messages, oasst); for your own field names "
             "use format 'pairs' with data.fields.prompt / data.fields.response",
    )


def _join(query: str, extra: str | None) -> str:
    extra = (extra or "").strip()
    return f"{query.strip()}\n\n{extra}" if extra else query


def _pairs(record: RawRecord, fields: Any) -> Sample:
    prompt = text_field(record, fields.prompt, "pairs")
    response = text_field(record, fields.response, "pairs")
    if fields.input:
        prompt = _join(prompt, text_field(record, fields.input, "pairs", required=False))
    return Sample(record_id(record, prompt, response), prompt, response)


def _alpaca(record: RawRecord) -> Sample:
    answer_field = "output" if "output" in record.data else "response"
    context_field = "input" if "input" in record.data else "context"
    prompt = _join(text_field(record, "instruction", "alpaca"),
                   text_field(record, context_field, "alpaca", required=False))
    response = text_field(record, answer_field, "alpaca")
    return Sample(record_id(record, prompt, response), prompt, response)


def _first_exchange(record: RawRecord, fmt: str, list_field: str, role_key: str,
                    text_key: str) -> Sample | None:
    """The first user turn and the assistant turn right after it; None if there is none."""
    turns = record.data.get(list_field)
    if not isinstance(turns, list):
        raise CloError(f"{record.where}: missing field {list_field!r} (a list of turns) for data.format {fmt!r}")
    parsed: list[tuple[str, str]] = []
    for number, turn in enumerate(turns, start=1):
        where = RawRecord(f"{record.where} {list_field}[{number}]", turn if isinstance(turn, dict) else {})
        if not isinstance(turn, dict):
            raise CloError(f"{where.where}: a turn must be an object with {role_key!r} and {text_key!r}")
        role = text_field(where, role_key, fmt)
        content = turn.get(text_key)
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if content is None or not isinstance(content, str):
            text_field(where, text_key, fmt)  # raises with the record and field
        parsed.append((role.lower(), content))
    for (role, prompt), (next_role, response) in zip(parsed, parsed[1:]):
        if role in _USER_ROLES and next_role in _ASSISTANT_ROLES:
            return Sample(record_id(record, prompt, response), prompt, response)
    return None


def resolve_format(records: Iterable[RawRecord], fmt: str, fields: Any) -> tuple[str, Iterator[RawRecord]]:
    """The concrete format (`auto` judged from the first record) and the records, unconsumed."""
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise CloError("data.source holds no records")
    if fmt == "auto":
        fmt = detect_format(first, fields)
    return fmt, itertools.chain([first], records)


def to_samples(records: Iterable[RawRecord], fmt: str, fields: Any, counts: Counter) -> Iterator[Sample]:
    """Convert `records` of the concrete format `fmt` (see `resolve_format`).

    `counts` receives `records` and, for conversations without a user -> assistant exchange,
    `no_exchange` (OpenAssistant skips are counted by `oasst_samples`).
    """
    def counted(stream: Iterable[RawRecord]) -> Iterator[RawRecord]:
        for record in stream:
            counts["records"] += 1
            yield record

    stream = counted(records)
    if fmt == "oasst":
        yield from oasst_samples(stream, counts)
        return
    for record in stream:
        if fmt == "pairs":
            yield _pairs(record, fields)
        elif fmt == "alpaca":
            yield _alpaca(record)
        else:
            sample = (_first_exchange(record, fmt, "conversations", "from", "value") if fmt == "sharegpt"
                      else _first_exchange(record, fmt, "messages", "role", "content"))
            if sample is None:
                counts["no_exchange"] += 1
            else:
                yield sample
