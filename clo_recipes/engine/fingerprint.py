"""Fingerprints: a stable hash of what a stage reads, with local files hashed by content.

Hashing content (not paths or mtimes) means a moved folder keeps its fingerprints and an
edited data file changes them. Large files (model weights) are hashed by size plus sampled
blocks, cached by (path, size, mtime) so a 16 GB checkpoint is not re-read on every `plan`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE = 4 * 2**20


def file_digest(path: Path) -> str:
    """sha256 of the file, or of size + three 4 MiB blocks for files over 64 MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
            return digest.hexdigest()
        digest.update(f"sampled:{size}".encode())
        for offset in (0, size // 2, size - _SAMPLE):
            handle.seek(offset)
            digest.update(handle.read(_SAMPLE))
    return "s-" + digest.hexdigest()


class DigestCache:
    """Remembers file digests between invocations, keyed by (path, size, mtime)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, str] = {}
        if path and path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):
                self.entries = {}
        self.dirty = False

    def digest(self, file: Path) -> str:
        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self.entries:
            self.entries[key] = file_digest(file)
            self.dirty = True
        return self.entries[key]

    def save(self) -> None:
        if self.path and self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
            self.dirty = False


def tree_digest(paths: list[Path], root: Path | None, cache: DigestCache) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        name = str(path.relative_to(root)) if root else path.name
        digest.update(f"{name}\0{cache.digest(path)}\n".encode())
    return digest.hexdigest()


def stable_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
