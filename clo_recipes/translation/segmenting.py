"""Split texts into translatable segments; keep code, URLs and markdown structure as they are.

A text becomes a sequence of verbatim strings and `Segment`s:
- fenced code blocks (``` or ~~~) stay verbatim, line breaks and blank lines too;
- each line's markdown structure (indentation, `>` quotes, `#` headings, `-`/`*`/`1.` list
  markers, task boxes) stays verbatim, and table rows are translated cell by cell;
- inside a line, inline code and URLs become placeholders `[[0]]`, `[[1]]`, ... that the
  translator is asked to copy; `Segment.restore` puts the originals back. When a translator
  drops or duplicates a placeholder, the pieces between the protected spans are translated
  on their own instead (`Segment.fragments`), so protected spans always survive verbatim;
- a line longer than `max_chars` is cut at sentence ends, then at commas or spaces, and the
  pieces are packed back up to `max_chars`, so every segment fits the translator.
Text without letters (numbers, punctuation, separator rows) is never sent to a translator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Union

_PLACEHOLDER = re.compile(r"\[\[(\d+)\]\]")
# Protected inside a line: inline code, URLs, and anything that already looks like a
# placeholder (so a literal "[[3]]" in the data cannot be confused with ours).
_PROTECTED = re.compile(
    r"`[^`\n]+`"
    r"|https?://[^\s<>()\[\]`\"']*[^\s<>()\[\]`\"'.,;:!?]"
    r"|www\.[^\s<>()\[\]`\"']*[^\s<>()\[\]`\"'.,;:!?]"
    r"|\[\[\d+\]\]"
)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_STRUCTURE = re.compile(r"^[ \t]*(?:>[ \t]?)*(?:#{1,6}[ \t]+|(?:[-*+]|\d{1,3}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?)?")
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
_SENTENCE_END = re.compile(r"(?<=[.!?…:;])\s+|(?<=[。！？])")
_CLAUSE_BREAK = re.compile(r"(?<=[,;，、])\s*")
_SPACE = re.compile(r"\s+")


def has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


@dataclass(frozen=True)
class Segment:
    """One unit sent to a translator: `text` with placeholders for the `protected` spans."""

    text: str
    protected: tuple[str, ...] = ()

    def restore(self, translated: str) -> str | None:
        """The translation with protected spans put back; None if a placeholder went missing."""
        found = sorted(int(index) for index in _PLACEHOLDER.findall(translated))
        if found != list(range(len(self.protected))):
            return None
        return _PLACEHOLDER.sub(lambda m: self.protected[int(m.group(1))], translated)

    def fragments(self) -> list[str]:
        """The texts between protected spans that contain letters (the fallback units)."""
        return [core for core in (piece.strip() for piece in _PLACEHOLDER.split(self.text)[::2]) if has_letters(core)]

    def join_fragments(self, translations: Mapping[str, str]) -> str:
        """Re-assemble from translated `fragments` and the original protected spans."""
        pieces = _PLACEHOLDER.split(self.text)
        out: list[str] = []
        for position, piece in enumerate(pieces):
            if position % 2:
                out.append(self.protected[int(piece)])
                continue
            core = piece.strip()
            if has_letters(core):
                lead = piece[: len(piece) - len(piece.lstrip())]
                trail = piece[len(piece.rstrip()):]
                piece = lead + translations[core] + trail
            out.append(piece)
        return "".join(out)


Part = Union[str, Segment]


@dataclass(frozen=True)
class SegmentedText:
    parts: tuple[Part, ...]

    @property
    def segments(self) -> list[Segment]:
        return [part for part in self.parts if isinstance(part, Segment)]

    def assemble(self, translate: Callable[[Segment], str]) -> str:
        return "".join(part if isinstance(part, str) else translate(part) for part in self.parts)


def _protect(body: str) -> tuple[str, list[str]]:
    """`body` with protected spans replaced by global placeholders, and the spans."""
    spans: list[str] = []

    def swap(match: re.Match) -> str:
        spans.append(match.group(0))
        return f"[[{len(spans) - 1}]]"

    return _PROTECTED.sub(swap, body), spans


def _make_segment(chunk: str, spans: list[str]) -> Segment:
    """A segment of `chunk` with its placeholders renumbered from 0 (so equal chunks share
    one cache entry wherever they appear)."""
    local: list[str] = []

    def renumber(match: re.Match) -> str:
        local.append(spans[int(match.group(1))])
        return f"[[{len(local) - 1}]]"

    return Segment(_PLACEHOLDER.sub(renumber, chunk), tuple(local))


def _cut_point(window: str) -> int:
    """Where to cut a window of an over-long sentence: after a clause comma in its second
    half, else after its last space; 0 when there is neither."""
    clauses = [m.end() for m in _CLAUSE_BREAK.finditer(window) if 0 < m.end() < len(window)]
    if clauses and clauses[-1] > len(window) // 2:
        return clauses[-1]
    return max((m.end() for m in _SPACE.finditer(window) if m.start() > 0), default=0)


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    """Cut an over-long sentence at commas/spaces (or anywhere, for unspaced scripts),
    never inside a placeholder; separators stay attached to the left piece."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[:max_chars]
        cut = _cut_point(window)
        if cut == 0:
            cut = max_chars
            open_at = window.rfind("[[")
            if open_at > 0 and "]]" not in window[open_at:]:
                cut = open_at
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


def _chunks(body: str, max_chars: int) -> list[str]:
    """`body` cut into pieces of at most `max_chars` (sentence ends first); the pieces
    concatenate back to `body` exactly."""
    if len(body) <= max_chars:
        return [body]
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(body):
        if match.end() > start:
            sentences.append(body[start:match.end()])
            start = match.end()
    sentences.append(body[start:])
    pieces = [piece for sentence in sentences for piece in _hard_split(sentence, max_chars)]
    packed: list[str] = []
    for piece in pieces:
        if packed and len(packed[-1]) + len(piece) <= max_chars:
            packed[-1] += piece
        else:
            packed.append(piece)
    return packed


def _body_parts(body: str, max_chars: int) -> Iterator[Part]:
    """A line's content (no structure prefix) as verbatim strings and segments."""
    protected_body, spans = _protect(body)
    if not has_letters(_PLACEHOLDER.sub("", protected_body)):
        yield body
        return
    for chunk in _chunks(protected_body, max_chars):
        core = chunk.strip()
        lead, trail = chunk[: len(chunk) - len(chunk.lstrip())], chunk[len(chunk.rstrip()):]
        if lead:
            yield lead
        if has_letters(_PLACEHOLDER.sub("", core)):
            yield _make_segment(core, spans)
        else:
            yield _PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], core)
        if trail:
            yield trail


def _line_parts(line: str, max_chars: int) -> Iterator[Part]:
    if _TABLE_ROW.match(line):
        for position, cell in enumerate(line.split("|")):
            if position:
                yield "|"
            yield from _body_parts(cell, max_chars) if has_letters(cell) else [cell]
        return
    prefix = _STRUCTURE.match(line).group(0)
    if prefix:
        yield prefix
    body = line[len(prefix):]
    if body:
        yield from _body_parts(body, max_chars)


def segment_text(text: str, max_chars: int) -> SegmentedText:
    """Split `text` into verbatim parts and translatable segments of at most `max_chars`
    (a segment can exceed it only by placeholder renumbering, never by content)."""
    parts: list[Part] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        content = line.rstrip("\r\n")
        ending = line[len(content):]
        opening = _FENCE.match(content)
        if fence is not None or opening:
            parts.append(line)
            if fence is None:
                fence = opening.group(1)
            elif content.strip().startswith(fence) and not content.strip()[len(fence):].strip():
                fence = None
            continue
        parts.extend(_line_parts(content, max_chars))
        if ending:
            parts.append(ending)
    return SegmentedText(tuple(_merge_verbatim(parts)))


def _merge_verbatim(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += part
                continue
        merged.append(part)
    return merged
