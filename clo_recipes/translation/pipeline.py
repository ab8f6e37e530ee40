"""Translate whole texts with any backend: segment, look up the cache, translate what is
missing in length-grouped batches (caching each batch as it lands), re-assemble.

Why length-grouped: a batch is padded to its longest segment and generates until its longest
translation is done, so a batch mixing a 20-char and a 400-char segment spends most of its
compute on padding. Sorting unique segments by length keeps each batch's lengths close, and,
as fairseq's `--max-tokens` does, batches of short segments take more rows: every batch gets
the padded size (rows x longest) of the first, longest batch, up to `MAX_ROWS_FACTOR` times
`batch_size` rows. Memory use therefore never exceeds the first batch's, and since the
longest batch runs first, a batch size that does not fit fails in seconds, not at the end.
`benchmarks/translate_throughput.py` measures the gain over fixed-order batches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from clo_recipes.errors import StageError

from .base import Translator
from .cache import TranslationCache
from .progress import translation_progress
from .segmenting import Segment, segment_text

log = logging.getLogger("clo_recipes")


MAX_ROWS_FACTOR = 4  # a batch of short segments holds at most this many times batch_size


def length_grouped_batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """Batches of texts of similar length, longest first; each batch's padded size (rows x
    longest characters) stays within the first batch's (`batch_size` x the longest text)."""
    ordered = sorted(texts, key=len, reverse=True)
    if not ordered:
        return []
    budget = batch_size * max(len(ordered[0]), 1)
    max_rows = batch_size * MAX_ROWS_FACTOR
    batches: list[list[str]] = []
    for text in ordered:
        batch = batches[-1] if batches else None
        # Sorted longest first: the batch's first text is its longest.
        if batch is not None and len(batch) < max_rows and (len(batch) + 1) * max(len(batch[0]), 1) <= budget:
            batch.append(text)
        else:
            batches.append([text])
    return batches


def fixed_order_batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """Batches in the given order: the naive baseline the benchmark compares against."""
    return [list(texts[start:start + batch_size]) for start in range(0, len(texts), batch_size)]


@dataclass
class TranslationStats:
    texts: int = 0
    segments: int = 0  # segment occurrences over all texts
    unique_segments: int = 0  # what the translator is responsible for (incl. fallbacks)
    cached: int = 0  # of those, found in the cache
    translated: int = 0  # of those, translated now
    placeholder_fallbacks: int = 0  # segments re-translated piecewise because a placeholder was lost
    seconds: float = 0.0
    batches: int = 0

    def as_dict(self) -> dict:
        rate = self.translated / self.seconds if self.seconds > 0 else 0.0
        return {**self.__dict__, "seconds": round(self.seconds, 3), "segments_per_second": round(rate, 2)}


@dataclass
class _Runner:
    """Translates unique units through the cache, batch by batch."""

    translator: Translator
    src: str
    tgt: str
    cache: TranslationCache | None
    stats: TranslationStats
    progress: bool | None
    batching: Callable[[Sequence[str], int], list[list[str]]] = length_grouped_batches
    done: dict[str, str] = field(default_factory=dict)

    def run(self, units: Iterable[str], description: str) -> dict[str, str]:
        wanted = [unit for unit in dict.fromkeys(units) if unit not in self.done]
        self.stats.unique_segments += len(wanted)
        use_cache = self.cache is not None and self.translator.cacheable
        if use_cache:
            hits = self.cache.get_many(self.translator.identity, self.src, self.tgt, wanted)
            self.done.update(hits)
            self.stats.cached += len(hits)
        missing = [unit for unit in wanted if unit not in self.done]
        started = time.perf_counter()
        with translation_progress(len(missing), description, enabled=self.progress) as advance:
            batching = self.batching if self.translator.length_grouped else fixed_order_batches
            for batch in batching(missing, self.translator.batch_size):
                outputs = self.translator.translate(batch, self.src, self.tgt, **self._keep_each(use_cache))
                if len(outputs) != len(batch):
                    raise StageError(f"translator returned {len(outputs)} translations for {len(batch)} texts")
                pairs = list(zip(batch, outputs))
                if use_cache:
                    self.cache.put_many(self.translator.identity, self.src, self.tgt, pairs)
                self.done.update(pairs)
                self.stats.translated += len(batch)
                self.stats.batches += 1
                advance(len(batch))
        self.stats.seconds += time.perf_counter() - started
        return self.done


    def _keep_each(self, use_cache: bool) -> dict:
        """A backend that answers one request at a time (`keeps_each`) caches each answer as
        it lands, so a batch that fails midway keeps its finished part."""
        if not (use_cache and getattr(self.translator, "keeps_each", False)):
            return {}
        identity, src, tgt = self.translator.identity, self.src, self.tgt
        return {"keep": lambda text, target: self.cache.put_many(identity, src, tgt, [(text, target)])}


def translate_texts(texts: Sequence[str], translator: Translator, *, src: str, tgt: str,
                    cache: TranslationCache | None, max_segment_chars: int, progress: bool | None = None,
                    batching: Callable[[Sequence[str], int], list[list[str]]] = length_grouped_batches,
                    ) -> tuple[list[str], TranslationStats]:
    """Translations of `texts`, in order, and what it took."""
    stats = TranslationStats(texts=len(texts))
    runner = _Runner(translator, src, tgt, cache, stats, progress, batching)
    label = f"translate {src}→{tgt}"
    if not translator.wants_segments:
        stats.segments = len(texts)
        done = runner.run(texts, label)
        return [done[text] for text in texts], stats

    documents = [segment_text(text, max_segment_chars) for text in texts]
    segments = [segment for document in documents for segment in document.segments]
    stats.segments = len(segments)
    done = runner.run((segment.text for segment in segments), label)

    restored: dict[Segment, str] = {}
    lost: list[Segment] = []
    for segment in dict.fromkeys(segments):
        text = segment.restore(done[segment.text])
        if text is None:
            lost.append(segment)
        else:
            restored[segment] = text
    if lost:
        stats.placeholder_fallbacks = len(lost)
        done = runner.run((fragment for segment in lost for fragment in segment.fragments()), label + " (fallback)")
        for segment in lost:
            restored[segment] = segment.join_fragments(done)
    log.info("translation %s→%s: %d segments (%d unique), %d cached, %d translated in %.1fs",
             src, tgt, stats.segments, stats.unique_segments, stats.cached, stats.translated, stats.seconds)
    return [document.assemble(restored.__getitem__) for document in documents], stats
