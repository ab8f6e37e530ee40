"""README's first two commands are the demo and the tests, and CI runs exactly the latter."""

from conftest import REPO


def bash_blocks(text):
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```bash"):
            current = []
        elif line.startswith("```") and current is not None:
            blocks.append(current)
            current = None
        elif current is not None and line.strip() and not line.startswith("#"):
            current.append(line.strip())
    return blocks


def test_first_commands_are_demo_then_tests_and_ci_runs_the_test_command():
    blocks = bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    demo, tests = blocks[0][0], blocks[1][0]
    assert demo.startswith("python3 -m venv") and demo.endswith("clo-recipe run recipes/demo_cpu.yaml")
    assert "pip install torch==2.13.0" in demo and "pip install torch==2.13.0" in tests
    test_command = tests.split(" && ")[-1]
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ci_lines[-1] == test_command
    for step in tests.split(" && ")[2:-1]:  # every install step of the README is in CI
        assert any(step.replace("pip install", "") in line for line in ci_lines), step
