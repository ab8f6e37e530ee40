"""Bad input gives a non-zero exit, no traceback, and a message naming file, line and field."""

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

GOOD = """\
name: demo
model: {base: org/model}
language: es
data: {source: data.jsonl}
translation: {backend: memory, memory_file: memory.jsonl}
"""


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "clo_recipes", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=60)


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def assert_clean_failure(result, *needles):
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"


def test_good_recipe_validates(tmp_path):
    result = cli("validate", str(write(tmp_path, GOOD)))
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout


def test_unknown_key_names_line_field_and_suggestion(tmp_path):
    path = write(tmp_path, GOOD + "method:\n  name: clo\n  bata: 0.2\n")
    assert_clean_failure(cli("validate", str(path)), "recipe.yaml:8:3", "method.bata", "unknown field 'bata'",
                         "did you mean 'beta'")


def test_all_errors_of_a_file_are_listed(tmp_path):
    path = write(tmp_path, GOOD + "train:\n  learning_rate: -1\n  epoch: 2\nmethod: {name: dpo}\n")
    result = cli("validate", str(path))
    assert_clean_failure(result, "recipe.yaml:7:3: train.learning_rate", "greater than 0",
                         "recipe.yaml:8:3: train.epoch", "did you mean 'epochs'", "recipe.yaml:9", "method.name")


def test_wrong_type_names_value(tmp_path):
    path = write(tmp_path, GOOD + "data2: 1\n")
    assert_clean_failure(cli("validate", str(path)), "recipe.yaml:6:1", "unknown field 'data2'", "did you mean 'data'")
    path = write(tmp_path, GOOD.replace("{source: data.jsonl}", "{source: data.jsonl, samples: many}"))
    assert_clean_failure(cli("validate", str(path)), "recipe.yaml:4", "data.samples", "'many'")


def test_missing_required_field(tmp_path):
    path = write(tmp_path, GOOD.replace("language: es\n", ""))
    assert_clean_failure(cli("validate", str(path)), "missing required field 'language'")


def test_yaml_syntax_error_has_line(tmp_path):
    path = write(tmp_path, GOOD + "train:\n  epochs: [1, 2\n")
    assert_clean_failure(cli("validate", str(path)), "YAML syntax error", "recipe.yaml:8")


def test_python_tags_are_refused(tmp_path):
    path = write(tmp_path, GOOD + "eval: !!python/object/apply:os.system ['echo pwned']\n")
    result = cli("validate", str(path))
    assert_clean_failure(result, "unsafe or unknown YAML tag", "recipe.yaml:6")
    assert "pwned" not in result.stdout


def test_duplicate_keys_are_errors(tmp_path):
    path = write(tmp_path, GOOD + "language: de\n")
    assert_clean_failure(cli("validate", str(path)), "duplicate key 'language' (first on line 3)", "recipe.yaml:6")


def test_missing_and_empty_files(tmp_path):
    assert_clean_failure(cli("validate", str(tmp_path / "nope.yaml")), "recipe file not found")
    assert_clean_failure(cli("validate", str(write(tmp_path, "\n"))), "is empty")
    assert_clean_failure(cli("validate", str(write(tmp_path, "- a\n- b\n"))), "must be a mapping")


def test_extends_loop_and_absolute_path(tmp_path):
    write(tmp_path, "extends: b.yaml\n" + GOOD, "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    assert_clean_failure(cli("validate", str(tmp_path / "a.yaml")), "extend each other in a loop", "a.yaml -> b.yaml -> a.yaml")
    path = write(tmp_path, f"extends: {tmp_path / 'b.yaml'}\n" + GOOD, "c.yaml")
    assert_clean_failure(cli("validate", str(path)), "must be a path relative to this recipe", "c.yaml:1")


def test_extends_merges_and_errors_point_into_the_parent(tmp_path):
    write(tmp_path, GOOD + "train: {epochs: 3, learning_rate: 0}\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ntrain: {epochs: 1}\n", "child.yaml")
    assert_clean_failure(cli("validate", str(child)), "base.yaml:6", "train.learning_rate")
    write(tmp_path, GOOD + "train: {epochs: 3, learning_rate: 1.0e-5}\n", "base.yaml")
    from clo_recipes.recipe.load import load_recipe

    recipe = load_recipe(child).recipe
    assert (recipe.name, recipe.train.epochs, recipe.train.learning_rate) == ("child", 1, 1e-5)


def test_unknown_language_suggests(tmp_path):
    path = write(tmp_path, GOOD.replace("language: es", "language: thia"))
    assert_clean_failure(cli("validate", str(path)), "recipe.yaml:3", "language", "unknown language 'thia'", "'thai'")


def test_set_overrides_apply_and_are_blamed(tmp_path):
    path = write(tmp_path, GOOD)
    from clo_recipes.recipe.load import load_recipe

    loaded = load_recipe(path, ["train.learning_rate=2e-5", "hardware.micro_batch_size=2", "method.baselines=[sft]"])
    assert loaded.recipe.train.learning_rate == pytest.approx(2e-5)
    assert loaded.recipe.hardware.micro_batch_size == 2
    assert loaded.recipe.method.baselines == ["sft"]
    assert_clean_failure(cli("validate", str(path), "--set", "train.lr=1"), "--set: train.lr", "unknown field 'lr'")
    assert_clean_failure(cli("validate", str(path), "--set", "train.lr"), "bad --set")
    # Checks made after the schema (here the batch split, in the resolver) blame --set too.
    assert_clean_failure(cli("plan", str(path), "--set", "train.global_batch_size=6"),
                         "--set: train.global_batch_size", "not a multiple of micro_batch_size")


def test_unknown_profile_at_plan_time(tmp_path):
    path = write(tmp_path, GOOD + "hardware: single24gb\n")
    assert_clean_failure(cli("plan", str(path)), "recipe.yaml:6", "unknown hardware profile 'single24gb'")


def test_debug_flag_shows_traceback(tmp_path):
    result = cli("--debug", "validate", str(tmp_path / "missing.yaml"))
    assert result.returncode != 0


def test_every_shipped_recipe_validates():
    recipes = sorted(p for p in (REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 5
    result = cli("validate", *map(str, recipes))
    assert result.returncode == 0, result.stdout + result.stderr
    for recipe in recipes:
        text = recipe.read_text(encoding="utf-8").splitlines()
        assert text[0].startswith("# yaml-language-server: $schema="), recipe
        assert any(line.startswith("# Run: ") and line.endswith(f"clo-recipe run recipes/{recipe.name}")
                   for line in text[:4]), recipe


def test_cross_field_errors_point_at_the_field(tmp_path):
    path = write(tmp_path, GOOD.replace("{backend: memory, memory_file: memory.jsonl}", "\n  backend: memory"))
    assert_clean_failure(cli("validate", str(path)), "recipe.yaml:6:3: translation.backend: 'memory' needs translation.memory_file")
    path = write(tmp_path, GOOD + "eval:\n  suites: [judge]\n  judge: {baseline: sft}\n")
    assert_clean_failure(cli("validate", str(path)), "recipe.yaml:8:11: eval.judge.baseline: 'sft' is not trained by this recipe")


def test_batch_split_is_checked_at_plan_time(tmp_path):
    path = write(tmp_path, GOOD + "hardware: cpu\ntrain: {global_batch_size: 6}\n")
    assert_clean_failure(cli("plan", str(path)), "recipe.yaml:7", "train.global_batch_size",
                         "is not a multiple of micro_batch_size", "hint: set train.global_batch_size: 4")
