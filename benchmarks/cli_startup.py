"""Cold start-up of `clo-recipe validate` against importing a preference-training stack.

`validate` and `plan` never import torch or transformers; this prints how long a cold
`clo-recipe validate recipes/thai_llama.yaml` takes next to the same validate through the
typer app (what the entry point's plain-validate path saves) and `from trl import
DPOTrainer` (what a CLI that imports its trainer eagerly pays before it can say anything),
measured side by side in the same run, median of N fresh processes each. The target is
validate under 0.25 s on an idle machine; under load, read the ratios.

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


CPU_SECONDS: dict[str, float] = {}  # command -> median CPU seconds (user + system) of the process


def timed(command: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process; CPU time is what a busy machine distorts least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_of(command: list[str], repeats: int) -> float:
    timed(command)  # warm the OS file cache so both sides compare like with like
    runs = [timed(command) for _ in range(repeats)]
    CPU_SECONDS[" ".join(command)] = statistics.median(cpu for _, cpu in runs)
    return statistics.median(wall for wall, _ in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ours = median_of([sys.executable, "-m", "clo_recipes", "validate", "recipes/thai_llama.yaml"], args.repeats)
    via_typer = median_of([sys.executable, "-c", "import sys; from clo_recipes.cli import main; "
                           "sys.argv = ['clo-recipe', 'validate', 'recipes/thai_llama.yaml']; main()"], args.repeats)
    trl = median_of([sys.executable, "-c", "from trl import DPOTrainer"], args.repeats)
    bare = median_of([sys.executable, "-c", "pass"], args.repeats)
    print(f"python -c pass                      {bare:7.3f} s")
    print(f"clo-recipe validate thai_llama.yaml {ours:7.3f} s")
    print(f"  the same through the typer app    {via_typer:7.3f} s  ({via_typer / ours:.2f}x)")
    print(f"from trl import DPOTrainer          {trl:7.3f} s")
    print(f"ratio (trl import / validate)       {trl / ours:7.1f}x")
    print("CPU seconds (median): " + ", ".join(f"{command.split(' ', 1)[1][:48]}: {seconds:.3f}"
                                               for command, seconds in CPU_SECONDS.items()))


if __name__ == "__main__":
    main()
