"""`memory` backend: translations looked up in a parallel file the user supplies.

Formats: JSONL with one object per entry, `{"en": "...", "<iso1>": "..."}` (the source and
target codes as keys), or TMX (`<tu>` units with `<tuv xml:lang="...">` variants; region
tags like `en-US` count as `en`). A text is looked up whole first, then, if the memory is
sentence-level, segment by segment (the same segmenting as the MT backends, so code and URLs
need no entry). A text found neither way is an error listing how many are missing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from clo_recipes.errors import CloError
from clo_recipes.files import enumerate_records
from clo_recipes.recipe.languages import UnknownLanguage, get_language

from .base import Translator
from .cache import TranslatorIdentity
from .segmenting import segment_text

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _code(tag: str) -> str | None:
    try:
        return get_language(tag.split("-")[0].split("_")[0]).iso1
    except UnknownLanguage:
        return None


def read_jsonl_memory(path: Path, src: str, tgt: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, record in enumerate_records(path):
        for code in (src, tgt):
            if not isinstance(record.get(code), str):
                raise CloError(f"translation memory {path.name} line {number}: missing text field {code!r}",
                               hint=f'each line is {{"{src}": "...", "{tgt}": "..."}}')
        entries[record[src]] = record[tgt]
    return entries


def read_tmx_memory(path: Path, src: str, tgt: str) -> dict[str, str]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise CloError(f"translation memory {path.name} is not valid TMX/XML: {error}") from None
    entries: dict[str, str] = {}
    for unit in root.iter("tu"):
        texts: dict[str, str] = {}
        for variant in unit.iter("tuv"):
            code = _code(variant.get(_XML_LANG) or variant.get("lang") or "")
            seg = variant.find("seg")
            if code and seg is not None:
                texts[code] = "".join(seg.itertext())
        if src in texts and tgt in texts:
            entries[texts[src]] = texts[tgt]
    if not entries:
        raise CloError(f"translation memory {path.name} has no unit with both {src!r} and {tgt!r} variants")
    return entries


class MemoryTranslator(Translator):
    wants_segments = False  # keyed by whole texts; falls back to segments itself
    cacheable = False  # the file is the cache
    length_grouped = False

    def __init__(self, memory_file: str, max_segment_chars: int = 400):
        self.path = Path(memory_file)
        self.max_segment_chars = max_segment_chars
        self.identity = TranslatorIdentity("memory", str(self.path))
        self.batch_size = 2**31  # one look-up pass, so a miss report counts every text
        self._entries: dict[tuple[str, str], dict[str, str]] = {}

    def entries(self, src: str, tgt: str) -> dict[str, str]:
        if (src, tgt) not in self._entries:
            if not self.path.is_file():
                raise CloError(f"translation memory file not found: {self.path}",
                               hint="translation.memory_file is relative to the recipe")
            reader = read_tmx_memory if self.path.suffix.lower() == ".tmx" else read_jsonl_memory
            self._entries[(src, tgt)] = reader(self.path, src, tgt)
        return self._entries[(src, tgt)]

    def lookup(self, text: str, src: str, tgt: str) -> str | None:
        entries = self.entries(src, tgt)
        if text in entries:
            return entries[text]
        if text.strip() in entries:  # keep the text's own surrounding whitespace
            core = text.strip()
            return text[: text.index(core)] + entries[core] + text[text.index(core) + len(core):]
        document = segment_text(text, self.max_segment_chars)
        translated = {}
        for segment in document.segments:
            found = entries.get(segment.text)
            restored = segment.restore(found) if found is not None else None
            if restored is None:
                return None
            translated[segment] = restored
        return document.assemble(translated.__getitem__)

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        found = [self.lookup(text, src, tgt) for text in texts]
        missing = [text for text, result in zip(texts, found) if result is None]
        if missing:
            first = missing[0] if len(missing[0]) <= 200 else missing[0][:200] + "..."
            raise CloError(
                f"translation memory {self.path.name} lacks {len(missing)} of {len(texts)} texts; first: {first!r}",
                hint=f"add {{\"{src}\": ..., \"{tgt}\": ...}} entries whose {src!r} text matches character for "
                     "character, or use an MT backend (translation.backend: hf)",
            )
        return found  # type: ignore[return-value]
