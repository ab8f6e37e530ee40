"""Reading and writing the files a run keeps, in one place so every file fails the same way.

- JSONL: every problem names the file and the line (`data.jsonl:12: not valid JSON ...`):
  bad JSON, bytes that are not UTF-8, a value that is not an object, a line too long to be
  one record. Append-only logs (metrics, generation checkpoints) may end in a line cut short
  by a kill or a full disk: readers that ask for it skip that torn tail, and appenders cut it
  off before writing, so the file stays valid.
- Atomic writes: a temporary file in the same folder renamed into place, so a crash or a
  full disk never leaves half a file under the final name.
- Disk problems (full, read-only, no permission) become one-screen `CloError`s naming the
  path, instead of a traceback (`disk_error`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import CloError, Location

# No record of this project is near this size (a sample is a few KB); a longer "line" is a file
# without line breaks (a JSON array saved as .jsonl, a binary file) and is refused before it is
# read whole into memory.
MAX_LINE_BYTES = 16 * 2**20

DISK_ERRNOS = {errno.ENOSPC: "no space left on the device",
               errno.EDQUOT: "the disk quota is exhausted",
               errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}


def _problem(path: Path, line: int | None, message: str, hint: str | None = None) -> CloError:
    return CloError(message, location=Location(file=str(path), line=line), hint=hint)


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start:error.start + 1].hex()
        raise _problem(path, number, f"not UTF-8 text (byte 0x{bad} at column {error.start + 1})",
                       hint="save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`") from None


def _json_message(error: json.JSONDecodeError) -> str:
    return f"{error.msg.removesuffix(' at')} at column {error.colno}"


def non_utf8_error(path: Path) -> CloError:
    """The error for a text file that does not decode: its first bad line and byte (read again
    in binary, since a text reader fails a buffer ahead of the line it is on)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                _decode(path, number, raw)
            except CloError as error:
                return error
    return _problem(path, None, "not UTF-8 text", hint="save the file as UTF-8")


def jsonl_values(path: Path, *, torn_tail_ok: bool = False,
                 max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) for every non-blank line of `path`, in order.

    `torn_tail_ok`: a last line without its newline that is not valid JSON was being written
    when the writer died (an append-only log); it is skipped instead of being an error."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise CloError(f"file not found: {path}") from None
    except OSError as error:
        raise disk_error(error, path) from None
    with handle:
        number = 0
        while raw := handle.readline(max_line_bytes + 1):
            number += 1
            if len(raw) > max_line_bytes:
                raise _problem(path, number, f"line longer than {max_line_bytes // 2**20} MiB: not one JSON record",
                               hint="JSONL holds one JSON object per line; a JSON array or object belongs in a "
                                    ".json file")
            text = _decode(path, number, raw)
            if not text.strip():
                continue
            try:
                value = json.loads(text.rstrip("\r\n"))  # so an error column stays on this line
            except json.JSONDecodeError as error:
                if torn_tail_ok and not raw.endswith(b"\n") and not handle.peek(1):
                    return  # the writer was cut off mid-line; everything before it is intact
                cut = not raw.endswith(b"\n") and not handle.peek(1)
                raise _problem(path, number, f"not valid JSON ({_json_message(error)})",
                               hint=("the file ends mid-record: it was cut short (a full disk or an "
                                     "interrupted copy); restore it or delete the last line") if cut else
                                    "one JSON object per line") from None
            yield number, value


def enumerate_records(path: Path, *, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for every non-blank line; anything else is an error at its line."""
    for number, value in jsonl_values(path, torn_tail_ok=torn_tail_ok):
        if not isinstance(value, dict):
            hint = ("this looks like a JSON array of records: name the file .json"
                    if number == 1 and isinstance(value, list) else None)
            raise _problem(path, number, f"expected a JSON object, got {type(value).__name__}", hint=hint)
        yield number, value


def read_jsonl(path: Path, *, torn_tail_ok: bool = False) -> Iterator[dict]:
    """Every JSON object of `path` (blank lines skipped); anything else is an error at its line."""
    for _, value in enumerate_records(path, torn_tail_ok=torn_tail_ok):
        yield value


def dumps_line(row: Any) -> str:
    """One JSONL line (UTF-8 text as is, not ASCII-escaped)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Write rows as JSON lines, atomically; returns the count."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for row in rows:
            count += 1
            yield dumps_line(row)

    _write_atomic(Path(path), lines())
    return count


class JsonlAppender:
    """An append-only JSONL log (`with JsonlAppender(path) as log: log.write(row)`). A torn last
    line left by a killed writer is cut off first, so the log stays one record per line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            _cut_torn_tail(self.path)
            self.handle = open(self.path, "a", encoding="utf-8")
        except OSError as error:
            raise disk_error(error, self.path) from None

    def write(self, row: Any) -> None:
        try:
            self.handle.write(dumps_line(row))
        except OSError as error:
            raise disk_error(error, self.path) from None

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as error:
            raise disk_error(error, self.path) from None

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError as error:
            raise disk_error(error, self.path) from None

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - 2**20)
        while True:  # find the last newline, a MiB at a time from the end
            handle.seek(start)
            block = handle.read(size - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return
            if start == 0:
                handle.truncate(0)
                return
            size, start = start, max(0, start - 2**20)


# --------------------------------------------------------------------------- atomic writes
def _write_atomic(path: Path, chunks: Iterable[str]) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise disk_error(error, path) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(Path(path), [text])


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2) -> None:
    _write_atomic(Path(path), [json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n"])


def read_json(path: Path) -> Any:
    """A JSON file; bad JSON or bytes name the file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CloError(f"file not found: {path}") from None
    except OSError as error:
        raise disk_error(error, path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise non_utf8_error(path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _problem(path, error.lineno, f"not valid JSON ({_json_message(error)})",
                       hint="the file may have been cut short; restore it or delete it to redo what wrote it"
                       ) from None


# --------------------------------------------------------------------------- disk errors
def is_disk_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def disk_error(error: OSError, path: Path | str | None = None) -> CloError | OSError:
    """A one-screen error for a full, read-only or forbidden disk naming the path; any other
    OSError is returned unchanged (a bug or a missing file is reported where it happens)."""
    if error.errno not in DISK_ERRNOS:
        return error
    where = error.filename or path
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = ("free space there (or point output_dir / cache_dir elsewhere), then run the same command "
                "again: finished stages are kept and the interrupted one resumes")
    else:
        hint = ("make the folder writable for this user (or point output_dir / cache_dir at one that is), "
                "then run the same command again: finished stages are kept")
    return CloError(f"cannot write {where}: {DISK_ERRNOS[error.errno]}", hint=hint)


def stage_failure(error: BaseException, folder: Path) -> CloError | None:
    """The disk error behind a stage's failure, or None. An OSError says so itself; libraries
    that write through their own code (torch.save, safetensors) raise a RuntimeError instead,
    so a failure while the disk holding `folder` is (nearly) full is reported as a full disk."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return disk_error(error, folder)  # type: ignore[return-value]
    if isinstance(error, CloError) or not isinstance(error, Exception):
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= 2**20:
        return None
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return CloError(f"cannot write in {folder}: no space left on the device ({free} bytes free); "
                    f"the stage stopped with: {first}",
                    hint="free space there (or point output_dir elsewhere), then run the same command again: "
                         "finished stages are kept and the interrupted one resumes")


def sqlite_error(error: Exception, path: Path, what: str) -> CloError | OSError:
    """A one-screen error for an SQLite store (`what`: "translation cache") that is damaged (cut
    short, overwritten) or on a disk that is full or read-only."""
    if isinstance(error, OSError):
        return disk_error(error, path)
    text = str(error)
    lowered = text.lower()
    if "disk is full" in lowered or "disk i/o" in lowered:
        return disk_error(OSError(errno.ENOSPC, text, str(path)), path)
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return disk_error(OSError(errno.EROFS, text, str(path)), path)
    if "locked" in lowered or "busy" in lowered:
        return CloError(f"{what} {path} is busy: {text}",
                        hint="another process holds it; wait for it, or give this run another cache_dir")
    return CloError(f"{what} {path} is damaged ({text})",
                    hint=f"move it aside (`mv {path} {path}.damaged`) and run the same command again: finished "
                         "stages are kept and what it held is redone; `sqlite3 FILE .recover` can salvage its rows")
