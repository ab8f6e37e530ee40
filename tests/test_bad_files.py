"""Bad data files and bad disks through the real CLI: each is a one-screen error naming the
file (and line), no traceback, nothing finished is lost, and the same command resumes once
the cause is fixed. Full and read-only disks use a small tmpfs (root only; skipped otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clo_recipes.errors import CloError
from clo_recipes.translation.cache import TranslationCache, TranslatorIdentity

RELAXED = ("{language_id: false, min_length_ratio: 0.001, max_length_ratio: 1000.0, max_repetition: 1.0, "
           "drop_copies: false}")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clo_recipes", *args], capture_output=True, text=True, timeout=120)


def project(folder: Path, runs: Path, *, text_bytes: int = 40) -> tuple[Path, list[str]]:
    """16 records (12 train + 4 held out), a memory translating each text, a recipe running
    source and translate only; returns the recipe and the data file's lines."""
    folder.mkdir(parents=True, exist_ok=True)
    filler = "x" * max(0, text_bytes - 30)
    rows = [{"id": f"r{i:02d}", "prompt": f"Question number {i} {filler}?", "response": f"Answer number {i} {filler}."}
            for i in range(16)]
    lines = [json.dumps(row) + "\n" for row in rows]
    (folder / "data.jsonl").write_text("".join(lines), encoding="utf-8")
    (folder / "memory.jsonl").write_text("".join(json.dumps({"en": text, "es": "es: " + text}) + "\n"
                                                 for row in rows for text in (row["prompt"], row["response"])))
    recipe = folder / "r.yaml"
    recipe.write_text(
        "name: bad\nlanguage: es\nmodel: {base: org/m}\ndata: {source: data.jsonl, samples: 12, eval_samples: 4}\n"
        f"translation: {{backend: memory, memory_file: memory.jsonl, filters: {RELAXED}}}\nhardware: cpu\n"
        f"output_dir: {runs}\ncache_dir: {folder / 'cache'}\n", encoding="utf-8")
    return recipe, lines


def run(recipe: Path, *stages: str) -> subprocess.CompletedProcess:
    return cli("run", str(recipe), *[arg for stage in stages for arg in ("--only", stage)])


def assert_one_screen(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 12, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def finished(runs: Path, kind: str) -> list[Path]:
    return sorted(p for p in (runs / "bad").glob(f"{kind}-*") if (p / "manifest.json").is_file())


# --------------------------------------------------------------------------- data files
DAMAGE = {
    "malformed line": lambda lines: (("".join(lines[:2]) + lines[2][:25] + "\n" + "".join(lines[3:])).encode(),
                                     ["data.jsonl:3: not valid JSON (Unterminated string"]),
    "record missing its fields": lambda lines: (("".join(lines[:4]) + '{"id": "r04", "prompt": "Hi"}\n'
                                                 + "".join(lines[5:])).encode(),
                                                ["data.jsonl line 5", "missing field 'response'"]),
    "non-UTF-8 bytes": lambda lines: ("".join(lines[:3]).encode() + lines[3].replace("Question", "Qu\xe9stion")
                                      .encode("latin-1") + "".join(lines[4:]).encode(),
                                      ["data.jsonl:4: not UTF-8 text (byte 0xe9 at column 28)", "iconv"]),
    "empty file": lambda lines: (b"", ["data.jsonl holds no records (the file is empty or blank)"]),
    "50 MB single line": lambda lines: (b'{"prompt": "' + b"x" * (50 * 2**20) + b'", "response": "y"}\n',
                                        ["data.jsonl:1: line longer than 16 MiB", ".json file"]),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_bad_data_file_is_one_screen_and_the_fixed_file_runs(tmp_path, damage):
    recipe, lines = project(tmp_path, tmp_path / "runs")
    good = (tmp_path / "data.jsonl").read_bytes()
    content, words = DAMAGE[damage](list(lines))
    (tmp_path / "data.jsonl").write_bytes(content)
    assert_one_screen(run(recipe, "source", "translate"), str(tmp_path), *words)
    assert finished(tmp_path / "runs", "source") == []

    (tmp_path / "data.jsonl").write_bytes(good)
    fixed = run(recipe, "source", "translate")
    assert fixed.returncode == 0, fixed.stderr
    translated = finished(tmp_path / "runs", "translate")
    assert len(translated) == 1 and len((translated[0] / "translated.jsonl").read_text().splitlines()) == 12


# --------------------------------------------------------------------------- translation cache
def test_a_translation_cache_cut_mid_record_is_named_and_moving_it_aside_recovers(tmp_path):
    path = tmp_path / "cache" / "translations.sqlite"
    who = TranslatorIdentity("hf", "m")
    texts = [f"sentence {i} " * 20 for i in range(2000)]
    with TranslationCache(path) as cache:
        cache.put_many(who, "en", "es", [(text, "es " + text) for text in texts])
        assert cache.count(who) == 2000
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])  # cut inside a page, as a full disk or a kill mid-copy would
    with pytest.raises(CloError) as error:
        with TranslationCache(path) as cache:
            cache.get_many(who, "en", "es", texts)
    message = str(error.value)
    assert message.startswith(f"translation cache {path} is damaged (database disk image is malformed)")
    assert f"mv {path} {path}.damaged" in message and "run the same command again" in message
    path.rename(path.with_name(path.name + ".damaged"))  # what the hint says
    with TranslationCache(path) as cache:  # a fresh cache: what it held is translated again
        assert cache.get_many(who, "en", "es", texts) == {}
        cache.put_many(who, "en", "es", [(texts[0], "uno")])
        assert cache.get_many(who, "en", "es", texts[:1]) == {texts[0]: "uno"}


# --------------------------------------------------------------------------- disks
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and `mount`")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_run_folder_stops_with_one_screen_and_the_same_command_resumes(tmp_path, small_disk):
    runs = small_disk / "runs"
    recipe, _ = project(tmp_path / "project", runs, text_bytes=3000)  # ~70 KB source, ~140 KB translation
    assert run(recipe, "source").returncode == 0
    source = finished(runs, "source")
    assert len(source) == 1
    stats = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 64 * 1024))  # leave 64 KiB

    full = run(recipe, "source", "translate")
    assert_one_screen(full, "no space left on the device", str(runs / "bad"), "run the same command again")
    assert finished(runs, "source") == source and finished(runs, "translate") == []
    assert (source[0] / "samples.jsonl").stat().st_size > 30_000  # the finished stage is intact

    filler.unlink()  # the cause, fixed
    again = run(recipe, "source", "translate")
    assert again.returncode == 0, again.stderr
    assert "source already done" in again.stdout
    translated = finished(runs, "translate")
    assert len(translated) == 1 and len((translated[0] / "translated.jsonl").read_text().splitlines()) == 12
    assert not list((runs / "bad").glob("**/.*.tmp*"))  # no temporary file left behind


def test_a_read_only_run_folder_is_one_screen_and_resumes_once_writable(tmp_path, small_disk):
    runs = small_disk / "runs"
    recipe, _ = project(tmp_path / "project", runs)
    assert run(recipe, "source").returncode == 0
    source = finished(runs, "source")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    blocked = run(recipe, "source", "translate")
    assert_one_screen(blocked, "the file system is read-only", str(runs / "bad"), "make the folder writable")
    assert finished(runs, "source") == source

    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    again = run(recipe, "source", "translate")
    assert again.returncode == 0, again.stderr
    assert "source already done" in again.stdout and len(finished(runs, "translate")) == 1
