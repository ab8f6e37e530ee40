"""`validate` and `plan` stay light: no torch or transformers, and a plain `validate` runs
without building the typer app (same output as through it)."""

import subprocess
import sys

import pytest
from conftest import REPO

from clo_recipes.main import plain_validate

PROBE = """
import sys
sys.argv = ["clo-recipe", *{args!r}]
from clo_recipes.{entry} import main
try:
    main()
except SystemExit as stop:
    code = stop.code
heavy = sorted(m for m in ("torch", "transformers", "accelerate", "peft") if m in sys.modules)
print("HEAVY", heavy, "TYPER", "typer" in sys.modules, file=sys.stderr)
"""


def probe(args, entry="main"):
    return subprocess.run([sys.executable, "-c", PROBE.format(args=list(args), entry=entry)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("args", [["validate", "recipes/thai_llama.yaml", "recipes/demo_cpu.yaml"],
                                  ["plan", "recipes/thai_llama.yaml", "--profile", "cpu"],
                                  ["plan", "demo_cpu", "--json"]])
def test_validate_and_plan_import_no_torch(args):
    result = probe(args)
    assert "HEAVY [] " in result.stderr, result.stderr[-3000:]


def test_plain_validate_skips_typer_and_prints_what_the_typer_app_prints(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "recipes" / "demo_cpu.yaml").read_text().replace("samples: 128", "sampels: 128"))
    args = ["validate", "recipes/thai_llama.yaml", str(bad), "--set", "train.epochs=1"]
    fast, full = probe(args), probe(args, entry="cli")
    assert "TYPER False" in fast.stderr and "TYPER True" in full.stderr
    strip = lambda text: text.rsplit("HEAVY", 1)[0]  # noqa: E731
    assert (fast.returncode, fast.stdout, strip(fast.stderr)) == (full.returncode, full.stdout, strip(full.stderr))
    assert "✓ recipes/thai_llama.yaml" in fast.stdout and "sampels" in fast.stderr and "did you mean 'samples'" in fast.stderr


def test_plain_validate_takes_only_the_plain_form():
    assert plain_validate(["validate", "a.yaml", "--set", "x=1", "b.yaml", "--set=y=2"]) == (["a.yaml", "b.yaml"],
                                                                                          ["x=1", "y=2"])
    assert plain_validate(["--debug", "validate", "a.yaml"]) == (["a.yaml"], [])
    for typer_parses in (["validate", "--help"], ["validate"], ["validate", "a.yaml", "--sett", "x=1"],
                         ["validate", "a.yaml", "--set"], ["plan", "a.yaml"], []):
        assert plain_validate(typer_parses) is None, typer_parses
