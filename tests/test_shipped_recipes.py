"""Shipped recipes by name: the wheel carries recipes/, `run`/`plan`/`validate` find a shipped
recipe when no such file is here, `recipes` lists them, `init --from` starts from one, and an
unknown name lists the shipped ones."""

import json
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import REPO

SHIPPED = sorted(path.stem for path in (REPO / "recipes").glob("*.yaml"))


def cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "clo_recipes", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the tree (the build writes build/ and *.egg-info)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    for name in ("clo_recipes", "recipes"):
        shutil.copytree(REPO / name, tree / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tree / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(tree), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    return next(out.glob("clo_recipes-*.whl"))


def test_the_wheel_carries_every_shipped_recipe_and_its_files(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in sorted((REPO / "recipes").rglob("*")):
            if path.is_file():
                inside = f"clo_recipes/shipped/{path.relative_to(REPO / 'recipes').as_posix()}"
                assert inside in names, inside
                assert archive.read(inside) == path.read_bytes()


def test_an_installed_package_runs_a_shipped_recipe_without_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    found = subprocess.run([sys.executable, "-c", "from clo_recipes.runner.shipped import shipped_dir; print(shipped_dir())"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=60)
    assert found.stdout.strip() == str(site / "clo_recipes" / "shipped")
    plan = cli("plan", "demo_cpu_it", "--json", cwd=work, env=env)
    assert plan.returncode == 0, plan.stderr
    document = json.loads(plan.stdout)
    assert document["run_dir"] == str(work / "runs" / "demo-cpu-smollm2-it")  # runs go here, not into the package
    assert document["recipe"]["data"]["source"] == str(site / "clo_recipes" / "shipped" / "data" / "demo_en.jsonl")


def test_validate_and_plan_find_a_shipped_recipe_by_name(tmp_path):
    result = cli("validate", "thai_llama", "recipes:demo_cpu", "korean_llama.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "✓ thai_llama  thai-llama3-clo" in result.stdout and "✓ recipes:demo_cpu" in result.stdout
    plan = cli("plan", "thai_llama", "--profile", "cpu", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["hardware_profile"] == "cpu"


def test_a_file_here_wins_over_a_shipped_name_and_recipes_prefix_forces_the_shipped_one(tmp_path):
    mine = yaml.safe_load((REPO / "recipes" / "demo_cpu.yaml").read_text())
    mine.update(name="mine", data={**mine["data"], "source": str(REPO / "recipes" / "data" / "demo_en.jsonl")})
    (tmp_path / "demo_cpu.yaml").write_text(yaml.safe_dump(mine))
    here = cli("validate", "demo_cpu.yaml", cwd=tmp_path)
    shipped = cli("validate", "recipes:demo_cpu", cwd=tmp_path)
    assert "mine:" in here.stdout and "demo-cpu-smollm2-pt:" in shipped.stdout


def test_an_unknown_name_lists_the_shipped_recipes(tmp_path):
    result = cli("run", "thai_lama", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no recipe file 'thai_lama' here, and no shipped recipe of that name" in result.stderr
    assert "did you mean 'thai_llama'?" in result.stderr and ", ".join(SHIPPED) in result.stderr
    missing_path = cli("run", "recipes/demo_cpu.yaml", cwd=tmp_path)  # a path typed outside a checkout
    assert missing_path.returncode == 2 and "recipe file not found: recipes/demo_cpu.yaml" in missing_path.stderr
    assert "use `demo_cpu` instead of the path" in missing_path.stderr


def test_recipes_lists_model_language_method_and_hardware(tmp_path):
    result = cli("recipes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert set(SHIPPED) <= set(rows)
    thai = rows["thai_llama"]
    assert "th" in thai and "single-24gb" in thai and "clo, sft" in thai
    assert "demo_efficiency" in result.stdout  # the shipped sweep


def test_init_starts_from_a_shipped_recipe(tmp_path):
    result = cli("init", "mine.yaml", "--from", "demo_cpu_it", "--samples", "24", "--hardware", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "mine.yaml").read_text())
    assert "extends" not in written and written["data"]["samples"] == 24 and written["language"] == "it"
    assert written["translation"]["memory_file"] == str((REPO / "recipes" / "data" / "demo_memory_it.jsonl").resolve())
    assert (tmp_path / "mine.yaml").read_text().splitlines()[2].startswith("# Started from the shipped recipe demo_cpu_it")
    korean = cli("init", "ko.yaml", "--from", "thai_llama", "--language", "Korean", cwd=tmp_path)  # extends merged in
    assert korean.returncode == 0, korean.stderr
    written = yaml.safe_load((tmp_path / "ko.yaml").read_text())
    assert written["language"] == "ko" and written["name"] == "ko-meta-llama-3-8b-instruct-clo"
    assert written["method"]["sft_weight"] == 0.5  # from base/paper.yaml
    unknown = cli("init", "x.yaml", "--from", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "shipped recipes:" in unknown.stderr and not (tmp_path / "x.yaml").exists()
    language = cli("init", "x.yaml", "--language", "Klingon", cwd=tmp_path)  # was a traceback
    assert language.returncode == 2 and "--language: unknown language 'Klingon'" in language.stderr
    assert "Traceback" not in language.stderr and not (tmp_path / "x.yaml").exists()
