"""A stage module for engine tests: records each call, can fail on demand, and writes the
files a real stage would (an output file and a checkpoint it resumes from)."""

import json
import os
from pathlib import Path


def run(ctx):
    log = Path(os.environ["COUNTING_STAGE_LOG"])
    with open(log, "a") as handle:
        handle.write(ctx.stage_id + "\n")
    checkpoint = ctx.work_dir / "checkpoint.txt"
    resumed_from = checkpoint.read_text() if checkpoint.exists() else None
    checkpoint.write_text(f"{ctx.stage_id} half done")
    if os.environ.get("COUNTING_STAGE_FAIL") == ctx.stage_id:
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-stage
    upstream = {dep: (path / "out.json").read_text() for dep, path in ctx.inputs.items()}
    echo = os.environ.get("COUNTING_STAGE_ECHO")  # a stage that carelessly echoes a setting
    (ctx.work_dir / "out.json").write_text(json.dumps({"stage": ctx.stage_id, "upstream": upstream, "echo": echo}))
    return {"resumed_from": resumed_from}
