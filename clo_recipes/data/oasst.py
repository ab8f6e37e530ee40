"""OpenAssistant (oasst1 / oasst2) message trees -> single-turn samples, as in the paper.

Each English root prompt gives one sample: the prompt and its top-ranked assistant reply
(lowest `rank`; rank 0 is the best). A root whose only reply is unranked keeps that reply; a
root with several replies none of which is ranked is skipped, since "top" is then unknown.
Deleted messages and messages that failed review are never used.

Two layouts are read:
- the flat message table of the hub datasets (`message_id`, `parent_id`, `role`, `text`,
  `lang`, `rank`, `deleted`, `review_result`, ...), one record per message;
- the nested tree export (`*.trees.jsonl`): one record per tree, `prompt` holding the root
  message and `replies` nested in each message.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Iterator

from clo_recipes.errors import CloError

from .records import RawRecord, Sample, text_field

_FLAT_KEYS = ("message_id", "parent_id", "role", "text")


def oasst_kind(data: dict[str, Any]) -> str | None:
    """"flat", "tree" or None (not OpenAssistant data)."""
    if all(key in data for key in _FLAT_KEYS):
        return "flat"
    prompt = data.get("prompt")
    if isinstance(prompt, dict) and "replies" in prompt and "text" in prompt:
        return "tree"
    return None


def _usable(message: dict[str, Any]) -> bool:
    return not message.get("deleted") and message.get("review_result") is not False


def top_reply(replies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best-ranked usable assistant reply, or the only one if none is ranked."""
    usable = [r for r in replies if r.get("role") == "assistant" and _usable(r) and r.get("text")]
    ranked = [r for r in usable if isinstance(r.get("rank"), (int, float))]
    if ranked:
        return min(ranked, key=lambda r: r["rank"])  # min() keeps the first on ties
    return usable[0] if len(usable) == 1 else None


def _sample(root: dict[str, Any], replies: list[dict[str, Any]], counts: Counter) -> Sample | None:
    if root.get("role") != "prompter" or not _usable(root):
        counts["oasst_unusable_root"] += 1
        return None
    if root.get("lang") != "en":
        counts["oasst_not_english"] += 1
        return None
    reply = top_reply(replies)
    if reply is None:
        counts["oasst_no_top_reply"] += 1
        return None
    return Sample(str(root["message_id"]), root["text"], reply["text"])


def _flat(records: Iterable[RawRecord], counts: Counter) -> Iterator[Sample]:
    roots: list[dict[str, Any]] = []
    replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        for key in _FLAT_KEYS[:1] + _FLAT_KEYS[2:]:
            text_field(record, key, "oasst")  # every message needs these (parent_id may be null)
        message = record.data
        if message.get("parent_id") is None:
            roots.append(message)
        else:
            replies[str(message["parent_id"])].append(message)
    for root in roots:
        sample = _sample(root, replies.get(str(root["message_id"]), []), counts)
        if sample is not None:
            yield sample


def _trees(records: Iterable[RawRecord], counts: Counter) -> Iterator[Sample]:
    for record in records:
        root = record.data.get("prompt")
        if not isinstance(root, dict):
            raise CloError(f"{record.where}: missing field 'prompt' (the root message) for data.format 'oasst'")
        where = RawRecord(f"{record.where} prompt", root)
        for key in ("message_id", "text", "role"):
            text_field(where, key, "oasst")
        sample = _sample(root, list(root.get("replies") or []), counts)
        if sample is not None:
            yield sample


def oasst_samples(records: Iterable[RawRecord], counts: Counter) -> Iterator[Sample]:
    """Samples from flat or nested OpenAssistant records (layout judged by the first)."""
    records = iter(records)
    first = next(records, None)
    if first is None:
        return

    def chained() -> Iterator[RawRecord]:
        yield first
        yield from records

    if oasst_kind(first.data) == "tree":
        yield from _trees(chained(), counts)
    else:
        yield from _flat(chained(), counts)
