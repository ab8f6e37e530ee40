"""Run one evaluate stage with the managed vLLM server from a JSON spec (a subprocess the
tests interrupt): `python vllm_stage.py spec.json`, spec = {recipe, tmp, inputs}."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from eval_context import make_context  # noqa: E402

from clo_recipes.stages import evaluate  # noqa: E402

if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    ctx = make_context(spec["recipe"], spec["stage"], Path(spec["tmp"]),
                       {name: Path(folder) for name, folder in spec["inputs"].items()})
    print(json.dumps(evaluate.run(ctx)))
