"""Bridge to lm-evaluation-harness: validate task names early, run tasks, merge results.

`check_task_names` runs at validate time and must stay light: it never imports torch. With
the `eval` extra installed it checks against the harness's own task index (built once per
harness version, ~15-30 s, then cached in the clo-recipes cache); without it, it checks
names against the task families the harness ships (so a typo is still caught on a laptop)
and says that the extra is needed to run them.

An entry of `eval.lm_eval_tasks` may also be a path to a task YAML of your own (harness
format, e.g. over a local JSONL with `dataset_path: json`): it runs offline like any task.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from clo_recipes.errors import CloError
from clo_recipes.files import write_json_atomic

EXTRA_HINT = "pip install 'clo-recipes[eval]' to install lm-evaluation-harness"

# Task families of lm-evaluation-harness relevant to language transfer, as patterns over the
# full task name. Language-specific suffixes follow each family's own code scheme.
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("mmlu", r"mmlu(_[a-z_]+)?"),
    ("global_mmlu_<lang>", r"global_mmlu(_full)?(_[a-z]{2,3})?(_[a-z_]+)?"),
    ("openai_mmmlu_<variant>_<lang>", r"openai_mmmlu(_[a-z_]+)?"),
    ("m_mmlu_<lang>", r"m_mmlu(_[a-z]{2,3})?"),
    ("belebele_<flores code>", r"belebele(_[a-z]{3}_[A-Z][a-z]{3})?"),
    ("arc_<lang> / arc_easy / arc_challenge", r"arc_(easy|challenge|[a-z]{2})(_mt)?"),
    ("hellaswag[_<lang>]", r"hellaswag(_[a-z]{2})?"),
    ("xnli_<lang>", r"xnli(_[a-z]{2})?"),
    ("xcopa_<lang>", r"xcopa(_[a-z]{2})?"),
    ("xstorycloze_<lang>", r"xstorycloze(_[a-z]{2})?"),
    ("xwinograd_<lang>", r"xwinograd(_[a-z]{2})?"),
    ("pawsx_<lang>", r"paws(x|_[a-z]{2})"),
    ("mgsm_<variant>_<lang>", r"mgsm(_[a-z_]+)?"),
    ("gsm8k", r"gsm8k(_[a-z_]+)?"),
    ("truthfulqa_<variant>", r"truthfulqa(_[a-z0-9_]+)?"),
    ("kmmlu", r"kmmlu(_[a-z_]+)?"),
    ("cmmlu", r"cmmlu(_[a-z_]+)?"),
    ("ceval", r"ceval(-valid)?(_[a-z_]+)?"),
    ("include_<lang>", r"include_base_44(_[a-z_]+)?"),
    ("okapi tasks", r"okapi(_[a-z_]+)?"),
    ("lambada", r"lambada(_[a-z_]+)?"),
    ("winogrande / piqa / boolq / ifeval", r"winogrande|piqa|boolq|ifeval|openbookqa|sciq|copa"),
)

_FAMILY_RE = [(label, re.compile(rf"^(?:{pattern})$")) for label, pattern in _FAMILIES]


def lm_eval_installed() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def _example_names() -> list[str]:
    """Concrete task names for "did you mean" when the harness is not installed."""
    from clo_recipes.recipe.languages import all_languages

    names = ["mmlu", "arc_easy", "arc_challenge", "hellaswag", "gsm8k", "truthfulqa_mc2",
             "winogrande", "piqa", "boolq", "ifeval", "kmmlu", "cmmlu", "xnli", "xcopa",
             "xstorycloze", "xwinograd", "pawsx", "mgsm_direct", "belebele", "global_mmlu"]
    for lang in all_languages():
        names += [f"belebele_{lang.flores}", f"global_mmlu_{lang.iso1}", f"m_mmlu_{lang.iso1}",
                  f"xnli_{lang.iso1}", f"arc_{lang.iso1}", f"hellaswag_{lang.iso1}",
                  f"mgsm_direct_{lang.iso1}"]
    return names


def _cache_dir() -> Path:
    configured = os.environ.get("CLO_RECIPES_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "clo-recipes"


def _harness_task_names() -> list[str]:
    """Every task, group and tag name the installed harness knows (cached per version)."""
    version = importlib.metadata.version("lm_eval")
    cache = _cache_dir() / f"lm-eval-tasks-{version}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager().all_tasks)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, names, indent=None)
    return names


def is_task_file(entry: str) -> bool:
    return entry.endswith((".yaml", ".yml"))


def task_file_name(path: Path) -> str:
    """The `task:` name declared in a task YAML of the user's own."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CloError(f"lm-eval task file not readable: {path} ({error.strerror})") from None
    # A regex, not a YAML parser: harness task files use custom tags (`!function`).
    match = re.search(r"^task:\s*(\S+)\s*$", text, re.M)
    if not match:
        raise CloError(f"{path} declares no `task:` name", hint="a harness task YAML starts with `task: <name>`")
    return match.group(1).strip("'\"")


def check_task_names(names: Sequence[str]) -> None:
    """Raise `CloError` listing every unknown task name with close matches; None if all exist."""
    for entry in names:
        if is_task_file(entry):
            task_file_name(Path(entry))
    names = [name for name in names if not is_task_file(name)]
    if not names:
        return
    installed = lm_eval_installed()
    if installed:
        known = _harness_task_names()
        known_set = set(known)
        unknown = [name for name in names if name not in known_set]
    else:
        known = _example_names()
        unknown = [name for name in names if not any(rx.match(name) for _, rx in _FAMILY_RE)]
    if not unknown:
        return
    from clo_recipes.errors import Problem

    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else None
        if not installed:
            hint = (hint + " " if hint else "") + (
                f"(checked against name patterns only: the `eval` extra is not installed; {EXTRA_HINT})")
        problems.append(Problem(f"unknown lm-evaluation-harness task '{name}'", hint=hint))
    raise CloError(problems=problems)


def run_tasks(model: Any, tokenizer: Any, tasks: Sequence[str], *, batch_size: int,
              max_length: int | None = None, limit: int | None = None) -> dict[str, dict]:
    """Run harness tasks on an already loaded model; returns `{task: {metric: value, "n": count}}`.

    The model object is handed to the harness (`HFLM(pretrained=model)`), so the same weights,
    adapter and dtype are measured as in the other suites, without loading a second copy.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    files = [Path(entry) for entry in tasks if is_task_file(entry)]
    names = [entry for entry in tasks if not is_task_file(entry)] + [task_file_name(path) for path in files]
    # Only the user's own task files: skip indexing the harness's thousands of tasks.
    manager = TaskManager(include_path=sorted({str(path.parent) for path in files}) or None,
                          include_defaults=len(names) > len(files))
    device = str(next(model.parameters()).device)
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device,
                   **({"max_length": max_length} if max_length else {}))
    output = lm_eval.simple_evaluate(model=wrapped, tasks=names, limit=limit, log_samples=False,
                                     task_manager=manager)
    return extract_metrics(output)


def extract_metrics(output: dict) -> dict[str, dict]:
    """The harness's `results` as `{task: {"acc": .., "acc_stderr": .., ..., "n": ..}}`.

    Harness keys look like `acc,none` (metric, filter); the default filter `none` is dropped
    from the name, other filters are kept (`exact_match,strict-match` -> `exact_match/strict-match`).
    """
    samples = output.get("n-samples", {})
    metrics: dict[str, dict] = {}
    for task, values in output.get("results", {}).items():
        row: dict[str, Any] = {}
        for key, value in values.items():
            if "," not in key or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else f"{metric}/{filter_name}"
            row[name] = float(value)
        counted = samples.get(task, {})
        if counted:
            row["n"] = int(counted.get("effective", counted.get("original", 0)))
        metrics[task] = row
    return metrics


def check_recipe(recipe) -> None:
    """The evaluate stage's plan-time check (named in the stage table)."""
    if recipe.eval.lm_eval_tasks:
        check_task_names(recipe.eval.lm_eval_tasks)
