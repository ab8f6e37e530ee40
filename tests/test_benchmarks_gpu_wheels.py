"""The GPU check's wheel list (benchmarks/gpu_wheels.txt) can travel and install on the GPU
image: checked statically (offline) here, and against the downloaded .whl/ when it exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIST = REPO / "benchmarks" / "gpu_wheels.txt"
LIMIT = 64 * 2**20  # what may travel to the device machine with the working tree
PYTHON = "311"  # the image's (and CI's) Python


def _requirements() -> dict[str, str]:
    lines = [line.strip() for line in LIST.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups() for line in lines)


def test_every_wheel_is_pinned_and_the_known_hazards_are_fixed():
    pins = _requirements()
    # unpinned, bitsandbytes resolves to 0.42.0 (105 MB, no CUDA 13 library)
    assert pins["bitsandbytes"] == "==0.50.2"
    assert pins["typing-extensions"] == ">=4.16"  # pydantic 2.14 imports typing_extensions.Sentinel
    assert all(spec.startswith(("==", ">=")) for spec in pins.values())
    header = LIST.read_text()
    assert f"--python-version {PYTHON[0]}.{PYTHON[1:]}" in header and "manylinux_2_24_x86_64" in header
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    assert "-r benchmarks/gpu_wheels.txt" in script and "Python 3.12" not in script


def test_downloaded_wheels_match_the_image_and_fit():
    folder = REPO / ".whl"
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        pytest.skip("no .whl/ here (downloaded only when preparing a GPU run)")
    assert sum(w.stat().st_size for w in wheels) < LIMIT
    for wheel in wheels:
        python_tag, abi, platform = wheel.stem.split("-")[-3:]
        assert python_tag in (f"cp{PYTHON}", "py3", "py2.py3") or python_tag.startswith("cp3") and abi == "abi3", wheel
        assert platform == "any" or "x86_64" in platform, wheel
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    assert set(_requirements()) <= names
