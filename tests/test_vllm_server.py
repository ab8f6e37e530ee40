"""The managed vLLM server's choices and faults: backend choice, adapters vLLM cannot serve,
plan-time checks, a taken port, a server that never becomes healthy or dies at start (the real
vLLM venv, no model served: each costs the seconds vLLM takes to fail)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from clo_recipes.errors import CloError, StageError
from clo_recipes.evaluation.backend_checks import check_recipe
from clo_recipes.evaluation.serving import unservable_reason
from clo_recipes.evaluation.vllm_server import ManagedServer, ServeSpec, find_python, lora_rank_limit
from clo_recipes.recipe.generation_backends import choose
from clo_recipes.recipe.schema.evaluation import EvalSection


def test_auto_takes_the_server_from_the_break_even_on():
    def chosen(requested, prompts, python):
        return choose(requested, prompts=prompts, server_python=python, break_even=40).name

    assert chosen("auto", 39, "/x/python") == "transformers"
    assert chosen("auto", 40, "/x/python") == "vllm"
    assert chosen("auto", 400, None) == "transformers"
    assert chosen("vllm", 1, None) == "vllm"  # plan time checked it
    assert choose("transformers", prompts=1, server_python=None, break_even=40).streams is False  # batches
    assert choose("endpoint", prompts=1, server_python=None, break_even=40).streams is True


def test_server_python_comes_from_the_setting_then_the_environment(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    assert find_python(str(tmp_path)) == str(tmp_path / "bin" / "python")  # a venv folder
    monkeypatch.setenv("CLO_VLLM_PYTHON", "/opt/v/bin/python")
    assert find_python(None) == "/opt/v/bin/python"
    assert find_python("/other/python") == "/other/python"


def test_lora_ranks_map_to_what_vllm_accepts_and_unservable_adapters_are_merged(tmp_path):
    assert [lora_rank_limit(r) for r in (1, 2, 8, 9, 64, 300, 512)] == [1, 8, 8, 16, 64, 320, 512]
    assert lora_rank_limit(513) is None

    def reason(**config):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, **config}))
        return unservable_reason(tmp_path)

    assert reason() is None
    assert reason(r=1024) == "LoRA rank 1024 is above vLLM's largest --max-lora-rank"
    assert "DoRA" in reason(use_dora=True)
    assert "lm_head" in reason(modules_to_save=["lm_head"])


def test_lora_adapter_is_served_under_its_own_name():
    spec = ServeSpec(model="/m", adapter="/a", max_lora_rank=16, max_model_len=512, memory_share=0.3)
    command = spec.command("/py", 1234)
    assert spec.request_model == "clo-adapter"
    assert command[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    assert "--lora-modules clo-adapter=/a --max-lora-rank 16" in joined and "--port 1234" in joined
    assert "--gpu-memory-utilization 0.3" in joined and "--max-model-len 512" in joined
    assert ServeSpec(model="/m").request_model == "clo-eval"


class _Recipe:
    def __init__(self, **fields):
        self.eval = EvalSection(**{"suites": ["fidelity"], **fields})


def test_plan_time_checks_name_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("CLO_VLLM_PYTHON", raising=False)
    with pytest.raises(CloError, match="does not exist"):
        check_recipe(_Recipe(generation_backend="vllm", vllm={"python": str(tmp_path / "nope" / "python")}))
    with pytest.raises(CloError, match="eval.endpoint or eval.endpoint_model is unset"):
        check_recipe(_Recipe(generation_backend="endpoint", endpoint="http://127.0.0.1:9/v1"))
    monkeypatch.delenv("NO_SUCH_KEY_ENV", raising=False)
    with pytest.raises(CloError, match=r"needs an API key, and \$NO_SUCH_KEY_ENV is unset"):
        check_recipe(_Recipe(generation_backend="endpoint", endpoint="https://api.example.com/v1",
                             endpoint_model="m", api_key_env="NO_SUCH_KEY_ENV"))
    # An endpoint that is not up (yet) is not a plan-time error: the stage waits and retries.
    check_recipe(_Recipe(generation_backend="endpoint", endpoint="http://127.0.0.1:9/v1", endpoint_model="m"))
    check_recipe(_Recipe(generation_backend="vllm", suites=["mc"]))  # nothing generated: nothing checked


def test_a_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ManagedServer(ServeSpec(model="/m"), python="/no/python", log_path=tmp_path / "log", port=port)
        with pytest.raises(StageError) as error:
            server.start()
    assert f"eval.vllm.port {port} is in use" in str(error.value) and server.process is None


@pytest.fixture(scope="module")
def vllm_python():
    import real_server

    return str(real_server.ensure_venv())


@pytest.mark.slow
def test_a_server_that_dies_at_start_shows_its_log(vllm_python, tmp_path):
    server = ManagedServer(ServeSpec(model=str(tmp_path / "no-such-model")), python=vllm_python,
                           log_path=tmp_path / "server.log", start_timeout_s=300)
    with pytest.raises(StageError) as error:
        server.start()
    text = str(error.value)
    assert "exited with code" in text and f"last lines of {tmp_path / 'server.log'}" in text
    assert "no-such-model" in text  # vLLM's own complaint, from the log
    assert len(text.splitlines()) <= 20 and "Traceback (most recent call last)" not in text.splitlines()[0]


@pytest.mark.slow
def test_a_server_never_healthy_times_out_and_is_stopped(vllm_python, tmp_path):
    import real_server

    spec = ServeSpec(model=str(real_server.model_folder()), dtype="float32", memory_share=0.3,
                     extra_args=["--enforce-eager"])
    server = ManagedServer(spec, python=vllm_python, log_path=tmp_path / "server.log", start_timeout_s=8)
    started = time.monotonic()
    with pytest.raises(StageError) as error:
        server.start()
    assert time.monotonic() - started < 60
    text = str(error.value)
    assert "did not become healthy within eval.vllm.start_timeout_s = 8 s" in text
    assert "raise eval.vllm.start_timeout_s" in text
    # Stopped with everything it forked: the log names the command, nothing of it runs on.
    assert server.process is None
    assert server.pgid is not None and group_members(server.pgid) == []


def group_members(pgid: int) -> list[int]:
    """Running processes of a process group (from /proc; zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members
