"""The persistent translation cache, shared by every run that uses the same cache dir.

One SQLite table keyed by (backend, model, revision, settings, source language, target
language, sha256 of the source segment). Rows are committed batch by batch while a
translation runs, so an interrupted run resumes where it stopped and a second recipe with
the same data and translator translates nothing. WAL mode and a busy timeout let two
processes (two runs, or a run and a `clo-recipe` inspection) use it at once.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from clo_recipes.files import sqlite_error

_SCHEMA = """
CREATE TABLE IF NOT EXISTS translations (
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    settings TEXT NOT NULL,
    src TEXT NOT NULL,
    tgt TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (backend, model, revision, settings, src, tgt, source_sha256)
)
"""
_LOOKUP_CHUNK = 500  # below SQLite's host-parameter limit


@dataclass(frozen=True)
class TranslatorIdentity:
    """What makes two translations of the same text interchangeable."""

    backend: str
    model: str
    revision: str = ""  # hub commit / tag, or a content digest for a local folder
    settings: str = ""  # generation settings that change the output (beams, prompt, ...)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TranslationCache:
    def __init__(self, path: Path):
        self.path = path
        with self._clear_errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(path, timeout=60.0)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.execute(_SCHEMA)
            self.connection.commit()

    @contextmanager
    def _clear_errors(self) -> Iterator[None]:
        """A damaged file (cut short mid-record) or a full / read-only disk: one screen naming it."""
        try:
            yield
        except (sqlite3.DatabaseError, OSError) as error:
            raise sqlite_error(error, self.path, "translation cache") from None

    def get_many(self, who: TranslatorIdentity, src: str, tgt: str, texts: Sequence[str]) -> dict[str, str]:
        """Cached translations of `texts` (those not cached are absent)."""
        with self._clear_errors():
            by_hash = {text_sha256(text): text for text in texts}
            hashes = list(by_hash)
            found: dict[str, str] = {}
            for start in range(0, len(hashes), _LOOKUP_CHUNK):
                chunk = hashes[start:start + _LOOKUP_CHUNK]
                rows = self.connection.execute(
                    "SELECT source_sha256, target FROM translations WHERE backend = ? AND model = ? AND revision = ? "
                    f"AND settings = ? AND src = ? AND tgt = ? AND source_sha256 IN ({','.join('?' * len(chunk))})",
                    (who.backend, who.model, who.revision, who.settings, src, tgt, *chunk),
                )
                for digest, target in rows:
                    found[by_hash[digest]] = target
            return found

    def put_many(self, who: TranslatorIdentity, src: str, tgt: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Store translations and commit, so they survive the process."""
        with self._clear_errors():
            now = time.time()
            self.connection.executemany(
                "INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(who.backend, who.model, who.revision, who.settings, src, tgt, text_sha256(source), source, target, now)
                 for source, target in pairs],
            )
            self.connection.commit()

    def count(self, who: TranslatorIdentity | None = None) -> int:
        with self._clear_errors():
            if who is None:
                return self.connection.execute("SELECT COUNT(*) FROM translations").fetchone()[0]
            return self.connection.execute(
                "SELECT COUNT(*) FROM translations WHERE backend = ? AND model = ? AND revision = ? AND settings = ?",
                (who.backend, who.model, who.revision, who.settings),
            ).fetchone()[0]

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "TranslationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
