"""Generated accelerate configs and launch commands for 1, 8 and 2x8 GPUs, checked against
accelerate's own launcher (parsing, validation, the environment it would hand each rank)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clo_recipes.errors import CloError
from clo_recipes.hardware import launch
from clo_recipes.hardware.detect import GPU, MachineFacts
from clo_recipes.hardware.launch import accelerate_config
from clo_recipes.recipe.schema.hardware import HardwareSection
from clo_recipes.runner import launch as runner_launch
from clo_recipes.runner.door import prepare
from clo_recipes.runner.launch import Launcher, launch_command, stage_args
from clo_recipes.runner.testing import write_recipe


def _hardware(profile: str, **values) -> HardwareSection:
    profile_values = yaml.safe_load((Path(launch.__file__).parent.parent / "recipe" / "profiles" / f"{profile}.yaml").read_text())
    profile_values.pop("description")
    return HardwareSection(profile=profile, **{**profile_values, **values})


def _accelerate_view(config: dict, tmp_path: Path, script_args: list[str]):
    """What `accelerate launch` makes of our config: its parsed, validated arguments."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    command = launch_command(path, "recipe.yaml", script_args)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(command[3:])
    _validate_launch_command(args)
    return args


def test_one_gpu_needs_no_distribution(tmp_path):
    config = accelerate_config(_hardware("single-80gb"), num_processes=1)
    assert config["distributed_type"] == "NO" and config["num_processes"] == 1
    assert config["mixed_precision"] == "bf16"
    assert "fsdp_config" not in config and "main_process_ip" not in config
    args = _accelerate_view(config, tmp_path, ["--only", "train-clo"])
    assert not (args.use_fsdp or args.multi_gpu or args.use_deepspeed)
    assert args.module and args.training_script == "clo_recipes"


def test_eight_gpus_fsdp_full_shard_with_layer_wrapping(tmp_path):
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = accelerate_config(_hardware("8xa100"), num_processes=8, use_fsdp2=True)
    assert config["distributed_type"] == "FSDP" and config["num_processes"] == 8 and config["num_machines"] == 1
    fsdp = config["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True  # full shard
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_offload_params"] is False
    args = _accelerate_view(config, tmp_path, ["--only", "train-clo"])
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    assert args.nproc_per_node == "8"
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp1_keeps_original_parameters_for_attention_only_training(tmp_path):
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = accelerate_config(_hardware("8xh100", cpu_offload=True), num_processes=8, use_fsdp2=False)
    fsdp = config["fsdp_config"]
    assert fsdp["fsdp_version"] == 1 and fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_use_orig_params"] is True and fsdp["fsdp_offload_params"] is True
    env = prepare_multi_gpu_env(_accelerate_view(config, tmp_path, []))
    assert env["FSDP_USE_ORIG_PARAMS"] == "true" and env["FSDP_OFFLOAD_PARAMS"] == "true"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"


def test_eight_gpus_without_sharding_is_plain_data_parallel(tmp_path):
    config = accelerate_config(_hardware("8xa100", sharding="none", precision="fp16"), num_processes=8)
    assert config["distributed_type"] == "MULTI_GPU" and config["mixed_precision"] == "fp16"
    args = _accelerate_view(config, tmp_path, [])
    assert args.multi_gpu and not args.use_fsdp


@pytest.mark.parametrize("stage, offload", [("deepspeed-zero2", False), ("deepspeed-zero3", True)])
def test_deepspeed_stages(tmp_path, stage, offload):
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    config = accelerate_config(_hardware("8xh100", sharding=stage, cpu_offload=offload), num_processes=8,
                               gradient_accumulation_steps=4, gradient_clipping=1.0)
    deepspeed = config["deepspeed_config"]
    assert config["distributed_type"] == "DEEPSPEED"
    assert deepspeed["zero_stage"] == int(stage[-1])
    assert deepspeed["gradient_accumulation_steps"] == 4 and deepspeed["gradient_clipping"] == 1.0
    assert deepspeed["offload_optimizer_device"] == ("cpu" if offload else "none")
    assert ("offload_param_device" in deepspeed) == (stage == "deepspeed-zero3")
    args = _accelerate_view(config, tmp_path, [])
    assert args.use_deepspeed
    args.deepspeed_fields_from_accelerate_config = ",".join(deepspeed)  # as `accelerate launch` does
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage[-1]
    assert env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] == "4"


def test_two_machines_of_eight(tmp_path):
    from accelerate.utils.launch import prepare_multi_gpu_env

    hardware = _hardware("8xh100", num_machines=2)
    config = accelerate_config(hardware, num_processes=16, num_machines=2, machine_rank=1,
                               main_process_ip="10.1.2.3", main_process_port=29555, use_fsdp2=True)
    assert config["num_processes"] == 16 and config["num_machines"] == 2 and config["machine_rank"] == 1
    assert config["main_process_ip"] == "10.1.2.3" and config["main_process_port"] == 29555
    args = _accelerate_view(config, tmp_path, [])
    prepare_multi_gpu_env(args)
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("8", "2", 1)  # 8 processes on each machine
    assert args.rdzv_endpoint == "10.1.2.3:29555"


def test_multi_node_needs_the_main_machine_address():
    with pytest.raises(CloError, match="address of machine 0"):
        accelerate_config(_hardware("8xh100"), num_processes=16, num_machines=2, machine_rank=1)
    with pytest.raises(CloError, match="outside 0..1"):
        accelerate_config(_hardware("8xh100"), num_processes=16, num_machines=2, machine_rank=2,
                          main_process_ip="10.0.0.1")


def test_launch_command_re_enters_the_package_for_one_stage():
    command = launch_command("/run/acc.yaml", "/r/recipe.yaml", stage_args("train-clo", ["train.epochs=1"], "8xa100"))
    assert command == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "/run/acc.yaml",
                       "-m", "clo_recipes", "run", "/r/recipe.yaml", "--only", "train-clo", "--no-launch", "--force",
                       "--profile", "8xa100", "--set", "train.epochs=1"]


# --------------------------------------------------------------------------- Launcher on a plan
def _plan(tmp_path: Path, recipe: dict, overrides: list[str] | None = None):
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    (tmp_path / "memory.jsonl").write_text('{"en": "a", "es": "b"}\n')
    path = write_recipe({"method": {"name": "clo", "baselines": ["sft"]}, "train": {"global_batch_size": 32}, **recipe},
                        tmp_path)
    return prepare(path, overrides or []).plan, path


def test_no_launcher_for_one_gpu_or_cpu(tmp_path):
    for profile in ("cpu", "single-24gb"):
        plan, path = _plan(tmp_path, {"hardware": profile})
        assert Launcher.for_plan(plan, path, []) is None


def test_launcher_takes_the_reference_and_training_stages(tmp_path, monkeypatch):
    for name in ("MACHINE_RANK", "NODE_RANK", "MAIN_PROCESS_IP", "MASTER_ADDR", "MAIN_PROCESS_PORT", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    plan, path = _plan(tmp_path, {"hardware": "8xa100"}, ["train.epochs=1"])
    launcher = Launcher.for_plan(plan, path, ["train.epochs=1"])
    assert launcher.world_size == 8 and launcher.is_main_machine
    assert [s.id for s in plan.stages if launcher.wants(s)] == ["reference-clo", "train-clo", "train-sft"]
    command = launcher.command(plan.stage("train-clo"))
    assert command[command.index("--config_file") + 1] == str(plan.run_dir / "accelerate_config.yaml")
    assert command[-8:] == ["run", str(path.resolve()), "--only", "train-clo", "--no-launch", "--force",
                            "--set", "train.epochs=1"]
    config = launcher.config()
    assert config["distributed_type"] == "FSDP" and config["num_processes"] == 8


def test_multi_node_values_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.9.9.9")
    monkeypatch.setenv("MASTER_PORT", "29600")
    plan, path = _plan(tmp_path, {"hardware": "8xh100", "train": {"global_batch_size": 64}}, ["hardware.num_machines=2"])
    launcher = Launcher.for_plan(plan, path, ["hardware.num_machines=2"])
    assert launcher.world_size == 16 and not launcher.is_main_machine
    config = launcher.config()
    assert (config["num_processes"], config["machine_rank"], config["main_process_ip"],
            config["main_process_port"]) == (16, 1, "10.9.9.9", 29600)
    flags = Launcher.for_plan(plan, path, [], machine_rank=0, main_process_ip="10.0.0.1")
    assert flags.config()["machine_rank"] == 0 and flags.config()["main_process_ip"] == "10.0.0.1"


def test_deepspeed_config_carries_the_derived_accumulation(tmp_path):
    plan, path = _plan(tmp_path, {"hardware": {"profile": "8xa100", "sharding": "deepspeed-zero3"}})
    config = Launcher.for_plan(plan, path, []).config()
    assert config["deepspeed_config"]["gradient_accumulation_steps"] == 2  # 32 / (2 x 8)
    assert config["deepspeed_config"]["gradient_clipping"] == 1.0


def test_a_users_accelerate_config_is_used_as_written(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    plan, path = _plan(tmp_path, {"hardware": {"profile": "single-80gb", "accelerate_config": str(own)}})
    launcher = Launcher.for_plan(plan, path, [])
    assert launcher is not None  # one GPU in the profile, but the user asked for their launcher
    assert launcher.write_config() == own and own.read_text().startswith("distributed_type: MULTI_GPU")
    assert launcher.command(plan.stage("train-clo"))[4] == str(own)


class _Console:
    def __init__(self):
        self.lines: list[str] = []

    def print(self, text="", **_):
        self.lines.append(str(text))


def test_describe_shows_the_exact_command_and_config(tmp_path):
    plan, path = _plan(tmp_path, {"hardware": "8xh100"})
    console = _Console()
    Launcher.for_plan(plan, path, []).describe(console)
    text = "\n".join(console.lines)
    assert "8 processes" in text
    assert "accelerate.commands.launch --config_file" in text and "--only train-sft --no-launch" in text
    assert "distributed_type: FSDP" in text and "num_processes: 8" in text
    assert not (plan.run_dir / "accelerate_config.yaml").exists()  # describing writes nothing


def _eight_gpus(**kw) -> MachineFacts:
    return MachineFacts(gpus=tuple(GPU(i, "NVIDIA H100 80GB HBM3", 79.6, (9, 0)) for i in range(8)), **kw)


def test_run_stage_launches_with_the_claim_held_by_the_parent(tmp_path, monkeypatch):
    plan, path = _plan(tmp_path, {"hardware": "8xh100"})
    launcher = Launcher.for_plan(plan, path, [])
    seen = {}

    def fake_run(command, env, check):
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr("clo_recipes.hardware.detect.detect", lambda runner=None: _eight_gpus())
    monkeypatch.setattr(runner_launch.subprocess, "run", fake_run)
    launcher.run_stage(plan.stage("train-clo"))
    assert seen["command"] == launcher.command(plan.stage("train-clo"))
    assert seen["env"]["CLO_RECIPES_CLAIM_HELD"] == "1"
    written = yaml.safe_load((plan.run_dir / "accelerate_config.yaml").read_text())
    assert written == launcher.config()

    monkeypatch.setattr(runner_launch.subprocess, "run", lambda command, env, check: subprocess.CompletedProcess(command, 3))
    with pytest.raises(CloError, match="exit code 3"):
        launcher.run_stage(plan.stage("train-clo"))


def test_run_stage_refuses_what_the_machine_cannot_do(tmp_path, monkeypatch):
    plan, path = _plan(tmp_path, {"hardware": "8xh100"})
    monkeypatch.setattr("clo_recipes.hardware.detect.detect",
                        lambda runner=None: MachineFacts(gpus=_eight_gpus().gpus[:2]))
    with pytest.raises(CloError, match="asks for 8 GPUs per machine; 2 visible"):
        Launcher.for_plan(plan, path, []).run_stage(plan.stage("train-clo"))
    plan, path = _plan(tmp_path, {"hardware": {"profile": "8xh100", "sharding": "deepspeed-zero3"}})
    monkeypatch.setattr(runner_launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CloError, match="needs DeepSpeed"):
        Launcher.for_plan(plan, path, []).run_stage(plan.stage("train-clo"))


def test_cli_dry_run_prints_the_launch_and_accepts_the_launched_arguments(tmp_path):
    plan, path = _plan(tmp_path, {"hardware": "8xa100"})
    cli = [sys.executable, "-m", "clo_recipes", "run", str(path)]
    parent = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert parent.returncode == 0, parent.stderr
    assert "accelerate.commands.launch" in parent.stdout and "fsdp_config" in parent.stdout
    # what each launched rank receives is a valid command line of the same CLI
    child = subprocess.run([*cli, *stage_args("train-clo", ["train.epochs=1"]), "--dry-run"],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert "accelerate.commands.launch" not in child.stdout  # --no-launch: no launch from inside a launch


# --------------------------------------------------------------------------- CPU processes
def test_cpu_processes_take_the_same_launch_as_gpus(tmp_path, monkeypatch):
    """`num_processes` on CPU: the same generated config and command as on GPUs (torchrun
    starts N ranks); only ACCELERATE_USE_CPU differs, so accelerate joins them over gloo."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    for name in ("MACHINE_RANK", "NODE_RANK", "MAIN_PROCESS_IP", "MASTER_ADDR", "MAIN_PROCESS_PORT", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    plan, path = _plan(tmp_path, {"hardware": {"profile": "cpu", "num_processes": 2}})
    launcher = Launcher.for_plan(plan, path, [])
    assert launcher.world_size == 2 and launcher.on_cpu and launcher.env == {"ACCELERATE_USE_CPU": "true"}
    (tmp_path / "gpu").mkdir()
    gpu_plan, gpu_path = _plan(tmp_path / "gpu", {"hardware": {"profile": "single-80gb", "num_gpus": 2}})
    gpu = Launcher.for_plan(gpu_plan, gpu_path, [])
    assert gpu.env == {}

    def shape(command: list[str]) -> list[str]:  # the command without its two paths
        return command[:4] + command[5:8] + command[9:]

    assert shape(launcher.command(plan.stage("train-clo"))) == shape(gpu.command(gpu_plan.stage("train-clo")))
    config = launcher.config()
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 2 and config["use_cpu"] is False
    assert config["main_process_port"] == 0  # one machine: accelerate picks a free port, parallel runs never collide
    args = _accelerate_view(config, tmp_path, [])
    prepare_multi_gpu_env(args)
    assert args.multi_gpu and not args.cpu and args.nproc_per_node == "2"  # torchrun, not the one-process launcher


def test_num_processes_on_gpus_must_be_one_per_gpu(tmp_path):
    from clo_recipes.errors import RecipeError

    with pytest.raises((CloError, RecipeError), match="one process per GPU"):
        _plan(tmp_path, {"hardware": {"profile": "8xa100", "num_processes": 4}})
    with pytest.raises((CloError, RecipeError), match=r"micro_batch_size × processes = 4 × 3 = 12"):
        _plan(tmp_path, {"hardware": {"profile": "cpu", "num_processes": 3}})


def test_each_machine_writes_its_own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MAIN_PROCESS_IP", "10.0.0.1")
    monkeypatch.delenv("MAIN_PROCESS_PORT", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    overrides = ["hardware.num_machines=2"]
    plan, path = _plan(tmp_path, {"hardware": "8xh100", "train": {"global_batch_size": 64}}, overrides)
    zero = Launcher.for_plan(plan, path, overrides, machine_rank=0)
    one = Launcher.for_plan(plan, path, overrides, machine_rank=1)
    assert zero.config_path != one.config_path and zero.config_path.parent == one.config_path.parent
    assert zero.config()["main_process_port"] == one.config()["main_process_port"] == 29500
    assert (zero.config()["machine_rank"], one.config()["machine_rank"]) == (0, 1)
