"""Cold start-up of `clo-recipe validate` against importing a preference-training stack.

`validate` and `plan` never import torch or transformers; this prints how long a cold
`clo-recipe validate recipes/thai_llama.yaml` takes next to `from trl import DPOTrainer`
(what a CLI that imports its trainer eagerly pays before it can say anything), measured
side by side in the same run, median of N fresh processes each.

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def median_of(command: list[str], repeats: int) -> float:
    timed(command)  # warm the OS file cache so both sides compare like with like
    return statistics.median(timed(command) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ours = median_of([sys.executable, "-m", "clo_recipes", "validate", "recipes/thai_llama.yaml"], args.repeats)
    trl = median_of([sys.executable, "-c", "from trl import DPOTrainer"], args.repeats)
    bare = median_of([sys.executable, "-c", "pass"], args.repeats)
    print(f"python -c pass                      {bare:7.3f} s")
    print(f"clo-recipe validate thai_llama.yaml {ours:7.3f} s")
    print(f"from trl import DPOTrainer          {trl:7.3f} s")
    print(f"ratio (trl import / validate)       {trl / ours:7.1f}x")


if __name__ == "__main__":
    main()
