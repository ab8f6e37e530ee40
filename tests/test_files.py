"""The file leaf (`clo_recipes/files.py`): JSONL errors name file and line, torn tails of
append-only logs, atomic writes that leave nothing behind, and disk errors as one screen."""

import errno
import json

import pytest

from clo_recipes.errors import CloError
from clo_recipes.files import (JsonlAppender, disk_error, enumerate_records, jsonl_values, read_json, read_jsonl,
                               sqlite_error, write_json_atomic, write_jsonl)


def test_rows_come_back_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes('\ufeff{"a": 1}\n\n  \n{"b": "ü"}\n'.encode("utf-8"))  # a BOM, as some editors write
    assert list(enumerate_records(path)) == [(1, {"a": 1}), (4, {"b": "ü"})]


@pytest.mark.parametrize("content, line, words", [
    (b'{"a": 1}\n{"a": 2,\n{"a": 3}\n', 2, "not valid JSON (Expecting property name enclosed in double quotes at column 9)"),
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', 2, "not UTF-8 text (byte 0xe9 at column 11)"),
    (b'{"a": 1}\n[1, 2]\n', 2, "expected a JSON object, got list"),
])
def test_a_bad_line_is_named_by_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(CloError) as error:
        list(read_jsonl(path))
    assert str(error.value).startswith(f"{path}:{line}: {words}")


def test_a_json_array_saved_as_jsonl_gets_a_hint(tmp_path):
    path = tmp_path / "array.jsonl"
    path.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    with pytest.raises(CloError, match="name the file .json"):
        list(read_jsonl(path))


def test_an_overlong_line_is_refused_before_it_is_read_whole(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text('{"a": 1}\n{"a": "' + "x" * 5000 + '"}\n')
    with pytest.raises(CloError, match=r"long.jsonl:2: line longer than"):
        list(jsonl_values(path, max_line_bytes=4096))
    assert len(list(jsonl_values(path, max_line_bytes=8192))) == 2


def test_a_torn_last_line_is_skipped_only_when_asked_and_only_at_the_end(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert list(read_jsonl(path, torn_tail_ok=True)) == [{"step": 1}, {"step": 2}]
    with pytest.raises(CloError, match=r"log.jsonl:3: not valid JSON.*\n.*the file ends mid-record"):
        list(read_jsonl(path))
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')  # torn in the middle: damage, not a tail
    with pytest.raises(CloError, match="log.jsonl:2"):
        list(read_jsonl(path, torn_tail_ok=True))


def test_the_appender_cuts_a_torn_tail_before_writing(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    with JsonlAppender(path) as log:
        log.write({"step": 3})
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'
    path.write_text('{"no newline at all')
    with JsonlAppender(path) as log:
        log.write({"step": 1})
    assert path.read_text() == '{"step": 1}\n'


def test_atomic_writes_leave_the_old_file_and_no_temporary_when_they_fail(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, [{"a": "ß"}, {"b": 2}]) == 2
    assert path.read_text(encoding="utf-8") == '{"a": "ß"}\n{"b": 2}\n'

    def rows():
        yield {"a": 1}
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert path.read_text(encoding="utf-8") == '{"a": "ß"}\n{"b": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_read_json_names_the_line_of_a_cut_file(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": 1, "b": [1, 2]})
    assert read_json(path) == {"a": 1, "b": [1, 2]}
    path.write_text(path.read_text()[:15])
    with pytest.raises(CloError, match=r"m.json:3: not valid JSON"):
        read_json(path)


def test_disk_errors_name_the_path_and_say_how_to_resume():
    full = disk_error(OSError(errno.ENOSPC, "No space left on device", "/runs/x/samples.jsonl"))
    assert isinstance(full, CloError)
    assert str(full).startswith("cannot write /runs/x/samples.jsonl: no space left on the device")
    assert "run the same command again" in str(full)
    read_only = disk_error(OSError(errno.EROFS, "Read-only file system"), "/runs/x")
    assert str(read_only).startswith("cannot write /runs/x: the file system is read-only")
    other = OSError(errno.ENOENT, "No such file")
    assert disk_error(other) is other  # not a disk problem: reported where it happens


def test_sqlite_errors_tell_a_damaged_file_from_a_full_disk(tmp_path):
    import sqlite3

    damaged = sqlite_error(sqlite3.DatabaseError("database disk image is malformed"), tmp_path / "t.sqlite", "cache")
    assert str(damaged).startswith(f"cache {tmp_path / 't.sqlite'} is damaged (database disk image is malformed)")
    assert "mv " in str(damaged)
    full = sqlite_error(sqlite3.OperationalError("database or disk is full"), tmp_path / "t.sqlite", "cache")
    assert "no space left on the device" in str(full)
