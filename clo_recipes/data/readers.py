"""Read raw records from a local file (JSONL, JSON, Parquet, CSV), a folder of them, or a
Hugging Face hub dataset. Every record carries its position so format errors can name it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from clo_recipes.errors import CloError
from clo_recipes.files import jsonl_values, non_utf8_error, read_json

from .records import RawRecord

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def looks_local(source: str) -> bool:
    """A path (the resolver makes recipe paths absolute) rather than a hub id `org/name`."""
    return source.startswith(("/", ".", "~")) or Path(source).suffix.lower() in LOCAL_SUFFIXES or Path(source).exists()


def read_records(source: str, *, config: str | None = None, split: str = "train",
                 revision: str | None = None) -> Iterator[RawRecord]:
    """Every record of `source`, in file order."""
    if looks_local(source):
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in LOCAL_SUFFIXES)
            if not files:
                raise CloError(f"data.source folder {path} holds no {'/'.join(LOCAL_SUFFIXES)} file")
            for file in files:
                yield from read_file(file, allow_empty=True)
            return
        if not path.is_file():
            raise CloError(f"data.source file not found: {path}",
                           hint="data.source is a hub dataset id or a path relative to the recipe")
        yield from read_file(path)
        return
    yield from read_hub(source, config=config, split=split, revision=revision)


def read_file(path: Path, *, allow_empty: bool = False) -> Iterator[RawRecord]:
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}
    if suffix not in readers:
        raise CloError(f"data.source {path}: unsupported file type {suffix!r}",
                       hint=f"use one of {', '.join(LOCAL_SUFFIXES)}")
    empty = True
    for record in readers[suffix](path):
        empty = False
        yield record
    if empty and not allow_empty:  # in a folder, an empty split file among others is fine
        raise CloError(f"data.source {path} holds no records (the file is empty or blank)",
                       hint="point data.source at the file with your samples, one JSON object per line")


def _record(where: str, value: object) -> RawRecord:
    if not isinstance(value, dict):
        raise CloError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return RawRecord(where, value)


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    # the shared reader names file and line for bad JSON, non-UTF-8 bytes and overlong lines
    for number, value in jsonl_values(path):
        yield _record(f"{path} line {number}", value)


def _read_json(path: Path) -> Iterator[RawRecord]:
    value = read_json(path)  # bad JSON or bytes: an error at the file's line
    if isinstance(value, dict):
        # `{"data": [...]}` / `{"train": [...]}`: one list of records inside an object.
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise CloError(f"{path.name}: expected a list of records (or an object holding one list)")
        value = lists[0]
    if not isinstance(value, list):
        raise CloError(f"{path.name}: expected a list of records")
    for number, item in enumerate(value, start=1):
        yield _record(f"{path} record {number}", item)


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(f"{path} row {number}", row)


def _read_csv(path: Path) -> Iterator[RawRecord]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                yield RawRecord(f"{path} line {reader.line_num}", dict(row))
        except UnicodeDecodeError:
            raise non_utf8_error(path) from None


def read_hub(dataset: str, *, config: str | None, split: str, revision: str | None) -> Iterator[RawRecord]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise CloError(f"data.source {dataset!r} is a hub dataset, but the `datasets` package is not installed",
                       hint="pip install datasets, or point data.source at a local JSONL/Parquet file") from None
    try:
        rows = load_dataset(dataset, name=config, split=split, revision=revision)
    except Exception as error:  # noqa: BLE001 - offline, not found, gated, bad config: all user-fixable
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CloError(
            f"cannot load hub dataset {dataset!r} (config {config!r}, split {split!r}): {message}",
            hint=(f"without network, download it once where you have one "
                  f"(`hf download --repo-type dataset {dataset}`) or export it to a local "
                  "JSONL / Parquet / CSV file and set data.source to that file's path"),
        ) from None
    for number, row in enumerate(rows, start=1):
        yield RawRecord(f"{dataset} row {number}", dict(row))
