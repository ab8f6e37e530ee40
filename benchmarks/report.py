"""The GPU check's JSON report, its printed table and ratios, and its parts: each part is recorded as soon as it ends (a run
cut short keeps what it finished), a failing part is recorded with its error while the rest
go on, and a part that would overrun the time budget is skipped, saying so."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from probes import release

REPO = Path(__file__).resolve().parent.parent


class Report:
    """The JSON result, rewritten after every part (a run cut short keeps what it finished)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict[str, Any] = {"script": "benchmarks/gpu_check.py",
                                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                     "notes": []}

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.data["notes"].append(text)

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.data, indent=1, default=str))
            temporary.replace(self.path)


def part(report: Report, name: str, deadline: float, needs_seconds: float, run) -> dict[str, Any] | None:
    """Run one part unless the time budget is spent; a failure is recorded, not raised."""
    left = deadline - time.perf_counter()
    if left < needs_seconds:
        report.data[name] = {"skipped": f"out of time budget ({left:.0f} s left, about {needs_seconds:.0f} s needed)"}
        report.save()
        return None
    print(f"--- {name}", flush=True)
    started = time.perf_counter()
    try:
        result = run()
    except Exception as error:  # noqa: BLE001  one part's failure must not lose the others
        result = {"error": f"{type(error).__name__}: {error}"[:2000], "traceback": traceback.format_exc()[-4000:]}
        print(result["traceback"], file=sys.stderr, flush=True)
        release()
    result["part_seconds"] = time.perf_counter() - started
    report.data[name] = result
    report.save()
    return result


def run_tests(timeout: int) -> dict[str, Any]:
    """`pytest -m cuda` over the files that use the marker; counts from its JUnit XML."""
    import xml.etree.ElementTree as ElementTree

    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.cuda" in p.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *files]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            tail = (error.stdout or b"")[-3000:]
            return {"files": files, "error": f"timed out after {timeout} s", "tail": str(tail)}
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if junit.is_file():
            for suite in ElementTree.parse(junit).getroot().iter("testsuite"):
                for key in counts:
                    counts[key] += int(suite.get(key, 0))
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"files": files, "command": " ".join(command[1:]), "returncode": done.returncode,
            "seconds": time.perf_counter() - started, **counts, "tail": (done.stdout + done.stderr)[-3000:]}


# ---- the printed table ---------------------------------------------------------------------

def path_cell(streamed: bool | None) -> str:
    return "-" if streamed is None else "streamed" if streamed else "full logits"


def summary(report: Report) -> list[str]:
    data = report.data
    columns = [("clo", "engine CLO"), ("trl_dpo", "TRL DPOTrainer"), ("qlora", "engine QLoRA")]

    def cell(name: str, key: str, fmt: str) -> str:
        result = data.get(name) or {}
        if "skipped" in result:
            return "skipped"
        if "error" in result:
            return "error"
        value = result
        for piece in key.split("."):
            value = value.get(piece) if isinstance(value, dict) else None
        return "-" if value is None else format(value, fmt)

    lines = [f"{'':30}" + "".join(f"{title:>17}" for _, title in columns)]
    for label, key, fmt in (("tokens/s", "tokens_per_second", ".0f"), ("seconds per step", "seconds_per_step", ".2f"),
                            ("model TFLOP/s", "model_tflops_per_second", ".3g"), ("MFU", "mfu", ".1%"),
                            ("HFU (with recomputation)", "hfu", ".1%"), ("peak memory (GiB)", "memory.peak_gib", ".2f"),
                            ("plan estimate w/o context", "plan_estimate.without_cuda_context_gib", ".2f"),
                            ("peak / estimate", "peak_over_estimate", ".2f"),
                            ("step-1 preference loss", "first_preference_loss", ".4f")):
        lines.append(f"{label:30}" + "".join(f"{cell(name, key, fmt):>17}" for name, _ in columns))
    lines.append(f"{'log-prob path':30}" + "".join(
        f"{path_cell((data.get(name) or {}).get('log_probs_streamed')):>17}" for name, _ in columns))
    for name, title in columns:
        reason = (data.get(name) or {}).get("skipped")
        if reason:
            lines.append(f"{title} skipped: {reason}")
    for name, title in columns:
        error = (data.get(name) or {}).get("error")
        if error:
            lines.append(f"{title} failed: {error.splitlines()[0][:300]}")
    return lines


def ratios(data: dict[str, Any]) -> dict[str, float | None]:
    clo, trl = data.get("clo") or {}, data.get("trl_dpo") or {}

    def ratio(a: Any, b: Any) -> float | None:
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    return {"tokens/s engine CLO / TRL DPOTrainer": ratio(clo.get("tokens_per_second"), trl.get("tokens_per_second")),
            "peak memory engine CLO / TRL DPOTrainer": ratio((clo.get("memory") or {}).get("peak_gib"),
                                                           (trl.get("memory") or {}).get("peak_gib")),
            "peak memory engine CLO / plan estimate": clo.get("peak_over_estimate")}
