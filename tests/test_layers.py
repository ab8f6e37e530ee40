"""The package tree is the dependency order: every import of a clo_recipes module points at
its own layer or one below it. Stage code is reached only through the stage table (module
names as strings), so the recipe layer never imports what validates against it."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Bottom to top. A unit is a subpackage or a top-level module of clo_recipes.
LAYERS = [
    {"__init__", "errors", "files", "secrets", "progress", "model_ref", "chat_endpoint", "testing", "data"},
    {"hardware"},
    {"recipe"},
    {"langid", "methods"},
    {"engine"},
    {"translation", "training"},
    {"evaluation"},
    {"stages", "share"},
    {"runner"},  # the one door: load, resolve, plan, hold to a lock, launch
    {"commands", "cli", "main", "__main__"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
PACKAGE = REPO / "clo_recipes"


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path):
    """(line, imported clo_recipes module) for every import in `path`, relative ones resolved."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "clo_recipes":  # `from clo_recipes import x` / `from .. import x`
                for alias in node.names:
                    yield node.lineno, f"clo_recipes.{alias.name}"
            elif module.startswith("clo_recipes."):
                yield node.lineno, module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("clo_recipes."):
                    yield node.lineno, alias.name


def test_every_unit_has_a_layer():
    units = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/*.py")}
    assert units - set(LEVEL) == set(), "new package: give it a layer in LAYERS"


def test_imports_point_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(".".join(path.relative_to(REPO).with_suffix("").parts))
        if path.name == "__init__.py" and path.parent == PACKAGE:
            source = "__init__"
        for line, module in _imports(path):
            target = _unit(module)
            if target not in LEVEL:  # `from clo_recipes import __version__`
                target = "__init__"
            if LEVEL[target] > LEVEL[source]:
                upward.append(f"{path.relative_to(REPO)}:{line}: {source} -> {target}")
    assert upward == []


def test_a_stage_check_fails_at_plan_time_at_its_field(tmp_path):
    """Translator language support moved out of the recipe layer into the stage table: `plan`
    still refuses a translator without the language, naming file, line and field."""
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: p\nlanguage: te\nmodel: {base: org/m}\ndata: {source: d.jsonl}\n"
        "translation: {backend: hf, model: facebook/m2m100_1.2B}\nhardware: cpu\n"
        f"output_dir: {tmp_path / 'runs'}\ncache_dir: {tmp_path / 'cache'}\n")
    result = subprocess.run([sys.executable, "-m", "clo_recipes", "plan", str(recipe)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2  # the CLI's exit code for a recipe error
    assert "r.yaml:5:28" in result.stderr and "cannot translate into Telugu" in result.stderr
    assert "r.yaml:5" in result.stderr and "translation.model" in result.stderr
    assert "Traceback" not in result.stderr
