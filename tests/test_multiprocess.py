"""Real multi-process runs on CPU: `clo-recipe run` launches the reference and training stages
through `accelerate launch` (torchrun, gloo) exactly as it would on GPUs.

Runs are in fp64 (`hardware.precision: fp64`) so that 1 and 2 processes can be compared
tightly: the two differ only in summation order (a gloo all-reduce of two half-batch
gradients against one sum). In fp64 that noise is ~1e-16 relative; Adam turns a gradient
difference δ into a weight difference of at most lr·δ/eps per step (lr 3e-3, eps 1e-8), so
after a few steps weights agree to ~1e-12. The bound 1e-9 keeps a margin of 1000 while a
wrong shard, a missing all-reduce or a doubled gradient moves weights by ~lr = 3e-3.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_data import EN, ES

from clo_recipes.engine.run import execute
from clo_recipes.runner.door import prepare
from clo_recipes.runner.testing import write_recipe

DATA_STAGES = ["source", "translate", "pairs"]
MODEL_STAGES = ["reference-clo", "train-clo"]
WEIGHT_TOLERANCE = 1e-9  # see the module docstring


# --------------------------------------------------------------------------- a project on disk
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from clo_recipes.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def make_project(folder: Path, tiny: Path, *, run_data: bool = True, **train) -> Path:
    """20 English rows, a translation memory for all of them, a fp64 CLO recipe; the data
    stages are run here, in-process, unless `run_data` is false (they never go through the
    launcher)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, memory = [], {}
    for i in range(20):
        prompt, response = f"Say {i}: {EN[i % 6]}", f"{EN[(i + 1) % 6]} Number {i}."
        rows.append({"prompt": prompt, "response": response})
        memory[prompt], memory[response] = f"Di {i}: {ES[i % 6]}", f"{ES[(i + 1) % 6]} Número {i}."
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "memory.jsonl").write_text("".join(json.dumps({"en": k, "es": v}, ensure_ascii=False) + "\n"
                                                 for k, v in memory.items()), encoding="utf-8")
    settings = {"max_steps": 4, "learning_rate": 3e-3, "global_batch_size": 8, "max_length": 64,
                "save_steps": 2, "warmup_ratio": 0.0, **train}
    path = write_recipe({"model": {"base": str(tiny)}, "method": {"name": "clo"}, "data": {"eval_samples": 4},
                         "train": settings,
                         "hardware": {"profile": "cpu", "micro_batch_size": 4, "precision": "fp64"}}, folder)
    if run_data:
        assert execute(plan(path), only=DATA_STAGES).ok
    return path


def plan(path: Path, overrides: list[str] | None = None):
    return prepare(path, overrides or []).plan


def stage_dir(path: Path, stage_id: str, overrides: list[str] | None = None) -> Path:
    the_plan = plan(path, overrides)
    return the_plan.stage_dir(the_plan.stage(stage_id))


def outputs(path: Path, stage_id: str, overrides: list[str] | None = None) -> dict:
    return json.loads((stage_dir(path, stage_id, overrides) / "manifest.json").read_text())["outputs"]


def weights(path: Path, overrides: list[str] | None = None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(stage_dir(path, "train-clo", overrides) / "model" / "model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[name] - b[name]).abs().max().item() for name in a)


def metric_rows(path: Path, overrides: list[str] | None = None) -> list[dict]:
    text = (stage_dir(path, "train-clo", overrides) / "metrics.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}
    for name in ("MACHINE_RANK", "NODE_RANK", "MAIN_PROCESS_IP", "MASTER_ADDR", "MAIN_PROCESS_PORT", "MASTER_PORT",
                 "RANK", "LOCAL_RANK", "WORLD_SIZE", "CLO_RECIPES_CLAIM_HELD"):
        if name not in extra:
            env.pop(name, None)
    return env


def cli_args(path: Path, overrides: list[str], stages: list[str]) -> list[str]:
    args = [sys.executable, "-m", "clo_recipes", "run", str(path)]
    for stage in stages:
        args += ["--only", stage]
    for override in overrides:
        args += ["--set", override]
    return args


def cli(path: Path, overrides: list[str], stages: list[str] = MODEL_STAGES, timeout: int = 300,
        **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(path, overrides, stages), env=environment(**env), capture_output=True,
                          text=True, timeout=timeout)


TWO = ["hardware.num_processes=2"]


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory) -> Path:
    """The baseline: reference and training in one process (no launcher), in this process."""
    path = make_project(tmp_path_factory.mktemp("one"), tiny)
    result = execute(plan(path), only=MODEL_STAGES)
    assert result.ok
    return path


# --------------------------------------------------------------------------- DDP and reference
@pytest.fixture(scope="module")
def two_processes(tiny, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    path = make_project(tmp_path_factory.mktemp("two"), tiny)
    completed = cli(path, TWO)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return path, completed


def test_two_process_ddp_training_equals_one_process_with_the_same_global_batch(one_process, two_processes):
    path, completed = two_processes
    assert "launching on 2 processes" in completed.stdout
    trained = outputs(path, "train-clo", TWO)
    assert trained["processes"] == 2 and trained["distributed"] == "MULTI_CPU"  # DDP over gloo
    assert outputs(one_process, "train-clo")["processes"] == 1
    assert (path.parent / "runs" / "test" / "accelerate_config.yaml").is_file()

    # each rank read its own half of every step; together they saw the one-process step
    shards = trained["first_step_samples_per_process"]
    assert len(shards) == 2 and len(shards[0]) == len(shards[1]) == 4 and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(outputs(one_process, "train-clo")["first_step_samples_per_process"][0])

    # metrics are sums over ranks: the same loss and token counts as one process
    one, two = metric_rows(one_process), metric_rows(path, TWO)
    assert [row["step"] for row in two] == [1, 2, 3, 4]
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-12)
    assert [row["tokens"] for row in two] == [row["tokens"] for row in one]
    for key in ("loss", "target/reward_margin", "en/chosen_logps", "grad_norm"):
        assert two[-1][key] == pytest.approx(one[-1][key], rel=1e-9, abs=1e-12), key

    base = weights(one_process)
    assert max_difference(weights(path, TWO), base) < WEIGHT_TOLERANCE
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(stage_dir(path, "train-clo", TWO) / "model")


def test_two_process_reference_scores_every_sample_once_in_data_order(one_process, two_processes):
    path, _ = two_processes
    produced = outputs(path, "reference-clo")
    assert produced["processes"] == 2 and produced["samples_per_process"] == [8, 8]
    ids = [json.loads(line)["id"] for line in (stage_dir(path, "pairs") / "train.jsonl").read_text().splitlines()]

    def rows(project: Path) -> list[dict]:
        text = (stage_dir(project, "reference-clo") / "reference.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    two, one = rows(path), rows(one_process)
    assert [row["id"] for row in two] == ids and len(ids) == 16  # every sample, once, in data order
    for a, b in zip(two, one):
        assert a["tokens"] == b["tokens"]
        for name, value in b["logps"].items():
            assert a["logps"][name] == pytest.approx(value, rel=1e-12)


# --------------------------------------------------------------------------- kill -9 and a dying rank
def _newest_checkpoint(folder: Path) -> int:
    return max((int(p.parent.name.rsplit("-", 1)[1]) for p in folder.glob("clo-step-*/state.json")), default=0)


def _wait_for_checkpoint(process: subprocess.Popen, folder: Path, log: Path) -> int:
    """The step of the first checkpoint this run writes."""
    before = _newest_checkpoint(folder)
    deadline = time.time() + 240
    while time.time() < deadline:
        if _newest_checkpoint(folder) > before:
            return _newest_checkpoint(folder)
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared in time")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_process(pid: int, rank: str) -> int:
    """The pid of training rank `rank` under the run `pid` (torchrun gives ranks their own sessions)."""
    for child in _descendants(pid):
        try:
            variables = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in variables:
            return child
    raise AssertionError(f"no training rank {rank} under process {pid}")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_two_process_run_resumes_to_the_same_weights(tiny, tmp_path):
    steps = ["train.max_steps=12", "train.save_steps=3"]
    path = make_project(tmp_path / "killed", tiny)
    assert execute(plan(path, steps), only=["reference-clo"]).ok  # not what this test is about
    overrides = [*TWO, *steps]
    checkpoints = stage_dir(path, "train-clo", overrides).with_suffix(".partial") / "checkpoints"
    log = tmp_path / "run.log"

    # 1. kill -9 of the whole run (launcher, agent and both ranks) after its first checkpoint
    with open(log, "w") as handle:
        run = subprocess.Popen(cli_args(path, overrides, ["train-clo"]), env=environment(), stdout=handle,
                               stderr=handle, start_new_session=True)
    _wait_for_checkpoint(run, checkpoints, log)
    ranks = [_rank_process(run.pid, "0"), _rank_process(run.pid, "1")]
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.time() + 10
    while any(_alive(rank) for rank in ranks) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(rank) for rank in ranks)  # no orphan rank trains on after the launcher died
    assert not (stage_dir(path, "train-clo", overrides) / "manifest.json").exists()

    # 2. one rank dies (kill -9 of rank 1 alone): a clear error, the finished stages stay
    with open(log, "w") as handle:
        run = subprocess.Popen(cli_args(path, overrides, ["train-clo"]), env=environment(), stdout=handle,
                               stderr=handle, start_new_session=True)
    second = _wait_for_checkpoint(run, checkpoints, log)
    os.kill(_rank_process(run.pid, "1"), signal.SIGKILL)
    assert run.wait(timeout=120) == 2, log.read_text()[-3000:]
    text = log.read_text()
    assert "train-clo on 2 processes failed" in text and "resumes this one from its last checkpoint" in text
    assert "Traceback" not in text.split("error\n")[-1]  # the engine's message is not a traceback
    assert (stage_dir(path, "reference-clo") / "manifest.json").exists()

    # 3. the same command again: resumes from the newest checkpoint and finishes
    resumed = cli(path, overrides, ["train-clo"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    result = outputs(path, "train-clo", overrides)
    assert result["resumed_from"] is not None and int(result["resumed_from"].rsplit("-", 1)[1]) >= second
    assert [row["step"] for row in metric_rows(path, overrides)] == list(range(1, 13))

    # against the same 12 steps uninterrupted (one process: the DDP test shows 1 == 2 processes)
    straight = make_project(tmp_path / "straight", tiny)
    assert execute(plan(straight, steps), only=MODEL_STAGES).ok
    assert max_difference(weights(path, overrides), weights(straight, steps)) < WEIGHT_TOLERANCE
    assert result["last_loss"] == pytest.approx(outputs(straight, "train-clo", steps)["last_loss"], rel=1e-9)


# --------------------------------------------------------------------------- several machines, simulated
def test_two_machines_of_one_process_train_together(one_process, tiny, tmp_path):
    """Two "machines" on 127.0.0.1: the same command, MACHINE_RANK 0 and 1. Machine 1 runs no
    data stage; it waits for machine 0's and joins the reference and training launches."""
    path = make_project(tmp_path / "nodes", tiny, run_data=False)  # machine 0 runs them in this run
    overrides = ["hardware.num_machines=2", "hardware.num_processes=1"]
    stages = [*DATA_STAGES, *MODEL_STAGES]
    common = {"MAIN_PROCESS_IP": "127.0.0.1", "MAIN_PROCESS_PORT": str(free_port())}
    logs = [tmp_path / "machine0.log", tmp_path / "machine1.log"]
    handles = [open(log, "w") for log in logs]
    machine1 = subprocess.Popen(cli_args(path, overrides, stages), env=environment(MACHINE_RANK="1", **common),
                                stdout=handles[1], stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(1.0)
    machine0 = subprocess.Popen(cli_args(path, overrides, stages), env=environment(MACHINE_RANK="0", **common),
                                stdout=handles[0], stderr=subprocess.STDOUT, start_new_session=True)
    try:
        codes = [machine0.wait(timeout=300), machine1.wait(timeout=60)]
    finally:
        for machine in (machine0, machine1):  # on a failure: the launchers too (their ranks follow them)
            if machine.poll() is None:
                os.killpg(machine.pid, signal.SIGKILL)
    for handle in handles:
        handle.close()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]

    assert "waiting for machine 0 to finish" in texts[1] and "joining on machine 1" in texts[1]
    assert all(f"▶ {stage} running" in texts[0] and f"▶ {stage} running" not in texts[1] for stage in DATA_STAGES)
    trained = outputs(path, "train-clo", overrides)
    assert trained["processes"] == 2 and outputs(path, "reference-clo")["samples_per_process"] == [8, 8]
    assert max_difference(weights(path, overrides), weights(one_process)) < WEIGHT_TOLERANCE


# --------------------------------------------------------------------------- bad settings
@pytest.fixture(scope="module")
def prepared(tiny, tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("errors"), tiny)


def _error_screen(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 2, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    screen = completed.stderr.split("error\n", 1)[1]
    assert len(screen.splitlines()) <= 12
    return screen


def _finished_stages_kept(path: Path) -> None:
    for stage in DATA_STAGES:
        assert (stage_dir(path, stage) / "manifest.json").exists()


def test_more_processes_than_cores_is_refused_before_launching(prepared):
    from clo_recipes.runner.launch import usable_cores

    many = usable_cores() + 1
    screen = _error_screen(cli(prepared, [f"hardware.num_processes={many}", f"train.global_batch_size={4 * many}"]))
    assert f"asks for {many} training processes on this machine; it has {usable_cores()} CPU cores" in screen
    assert f"hardware.num_processes={usable_cores()}" in screen
    _finished_stages_kept(prepared)


def test_a_port_in_use_is_named(prepared):
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        screen = _error_screen(cli(prepared, TWO, MAIN_PROCESS_PORT=str(port)))
    assert f"port {port} on this machine is in use" in screen and "MAIN_PROCESS_PORT" in screen
    _finished_stages_kept(prepared)


def test_fsdp_on_cpu_processes_says_it_needs_gpus(prepared):
    """accelerate enables its FSDP plugin (v1 and v2) only on accelerators; DDP is the mode
    that runs on CPU processes (the DDP test above)."""
    screen = _error_screen(cli(prepared, [*TWO, "hardware.sharding=fsdp"]))
    assert "hardware.sharding: fsdp does not run on CPU processes" in screen
    assert "hardware.sharding: none" in screen
    _finished_stages_kept(prepared)


ACCELERATE_ON_CPU = """
import os, sys, torch
from pathlib import Path
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin
from torch.distributed.fsdp import fully_shard

accelerator = Accelerator(cpu=True, fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=int(sys.argv[1])))
layer = fully_shard(torch.nn.Linear(4, 4))  # torch itself, on the same gloo group
# One file per rank: two processes printing to one pipe can interleave mid-line.
report = f"{accelerator.distributed_type.name} {accelerator.num_processes} {tuple(layer.weight.to_local().shape)}"
(Path(sys.argv[2]) / f"rank{os.environ['RANK']}.txt").write_text(report, encoding="utf-8")
"""


@pytest.mark.parametrize("fsdp_version", [1, 2])
def test_accelerate_runs_its_fsdp_plugin_as_ddp_on_cpu_processes(tmp_path, fsdp_version):
    """Why `sharding: fsdp` is refused on CPU (tripwire for an accelerate upgrade). Even with an
    explicit FSDP plugin, accelerate 1.16 picks DistributedType.FSDP only inside its branch for
    accelerator devices (AcceleratorState.__init__: `elif self.distributed_type in [MULTI_GPU,
    MULTI_NPU, ...]`, which has no MULTI_CPU), and `accelerate launch` sends `use_fsdp` to its
    multi-GPU launcher only `if not args.cpu`. So CPU processes train DDP, while torch's own
    fully_shard does shard over the same gloo group: the limit is accelerate's. If this test
    fails, accelerate now shards on CPU: lift the refusals in runner/launch.py
    (check_machine) and training/loop.py (_check_sharding) and train fsdp here."""
    script = tmp_path / "probe.py"
    script.write_text(ACCELERATE_ON_CPU, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script),
                           str(fsdp_version), str(tmp_path)], env=environment(), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [(tmp_path / f"rank{rank}.txt").read_text(encoding="utf-8") for rank in (0, 1)]
    assert reports == ["MULTI_CPU 2 (2, 4)", "MULTI_CPU 2 (2, 4)"], reports
