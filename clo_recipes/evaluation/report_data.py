"""The parts of `report.json` beyond the metric tables: every answer side by side, the
training curves, the translation's per-sample quality, the key settings and package versions.

Pure functions over rows already read from the stage folders (the report stage reads them);
`report.md` and `report.html` both render from the document these build, so the two pages
cannot disagree.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

WORST_TRANSLATIONS = 15  # the lowest round-trip chrF samples the page lists
MAX_DROPPED = 50  # dropped samples listed in full (the count is always complete)
MAX_CURVE_POINTS = 400  # per arm; longer runs keep every k-th step (and the last)


def answer_rows(answers: dict[str, list[dict]], target: str) -> list[dict]:
    """Every evaluation prompt with each model's answer and its detected language. A prompt
    is `disagree` when the models' answers were detected in different languages (one model
    switched language where another did not); `wrong` lists the models whose answer is not in
    the prompt's language. Target-language prompts first, file order within a language."""
    rows: dict[tuple[str, str], dict] = {}
    for label, records in answers.items():
        for record in records:
            row = rows.setdefault((record["id"], record["lang"]), {
                "id": record["id"], "lang": record["lang"], "prompt": record["prompt"], "answers": {}})
            row["answers"][label] = {"text": record["answer"], "lang": record.get("answer_lang", "unknown"),
                                     "confidence": record.get("answer_lang_confidence")}
    out = sorted(rows.values(), key=lambda row: row["lang"] != target)
    for row in out:
        langs = {answer["lang"] for answer in row["answers"].values()}
        row["disagree"] = len(langs) > 1
        row["wrong"] = [label for label, answer in row["answers"].items() if answer["lang"] != row["lang"]]
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")  # six significant digits: plenty for a curve, half the bytes


def training_curves(rows: list[dict], reference: dict | None = None) -> dict:
    """An arm's metrics.jsonl as columns: `step` (counted across phases), each numeric metric,
    `phases` (name and first step of each) and, for preference arms, the reference stage's mean
    log-probs of the frozen starting model (`reference`: l_l, l_en, en_en, en_l)."""
    if len(rows) > MAX_CURVE_POINTS:
        every = math.ceil(len(rows) / MAX_CURVE_POINTS)
        rows = rows[::every] + ([rows[-1]] if (len(rows) - 1) % every else [])
    columns: dict[str, list[float | None]] = {}
    phases: list[dict] = []
    steps: list[int] = []
    offset, last_phase, last_step = 0, None, 0
    for row in rows:
        if row.get("phase") != last_phase:  # a new phase restarts its step count
            offset += last_step if last_phase is not None else 0
            last_phase = row.get("phase")
            phases.append({"phase": last_phase, "start": offset + int(row.get("step", 1))})
        last_step = int(row.get("step", len(steps) + 1))
        steps.append(offset + last_step)
    keys = [key for key in dict.fromkeys(k for row in rows for k in row)
            if key not in ("phase", "step", "epoch", "seconds", "tokens_per_second", "tokens")
            and any(_number(row.get(key)) is not None for row in rows)]
    for key in keys:
        columns[key] = [_number(row.get(key)) for row in rows]
    return {"steps": steps, "phases": phases, "metrics": columns,
            "reference": dict(reference) if reference else None}


def sample_chrf(row: dict) -> float | None:
    """A sample's round-trip score: the lower of its fields' chrF (None when not scored)."""
    scores = [s for s in (row.get("round_trip_chrf") or {}).values() if s is not None]
    return min(scores) if scores else None


def translation_samples(kept: Iterable[dict], dropped: list[dict]) -> dict:
    """Per-sample round-trip chrF of the kept samples (for a histogram), the worst of them with
    their text, and the dropped samples with the filter that dropped them and why."""
    scored = [(score, row) for row in kept if (score := sample_chrf(row)) is not None]
    scored.sort(key=lambda pair: pair[0])

    def brief(row: dict) -> dict:
        return {key: row[key] for key in ("id", "split", "reason", "field", "detail", "prompt", "response",
                                          "prompt_l", "response_l", "round_trip_chrf") if key in row}

    return {
        "chrf_kept": [round(score, 2) for score, _ in scored],
        "chrf_dropped": [round(score, 2) for row in dropped if (score := sample_chrf(row)) is not None],
        "worst": [{**brief(row), "chrf": round(score, 2)} for score, row in scored[:WORST_TRANSLATIONS]],
        "dropped": [brief(row) for row in dropped[:MAX_DROPPED]],
        "dropped_total": len(dropped),
    }


def key_settings(recipe: Any) -> dict[str, Any]:
    """The recipe fields a reader needs to know what produced the numbers (model, data,
    translation, method, training, evaluation)."""
    def get(path: str) -> Any:
        value = recipe
        for part in path.split("."):
            value = getattr(value, part, None) if not isinstance(value, dict) else value.get(part)
            if value is None:
                return None
        return value

    fields = ["model.base", "model.revision", "model.gguf_file", "language", "data.source", "data.config",
              "data.samples", "data.eval_samples", "data.seed", "translation.backend", "translation.model",
              "method.name", "method.baselines", "method.beta", "method.sft_weight", "adapter.kind",
              "adapter.trainable", "train.learning_rate", "train.scheduler", "train.warmup_ratio",
              "train.max_steps", "train.epochs",
              "train.global_batch_size", "train.max_length", "train.seed", "hardware.precision",
              "eval.suites", "eval.max_prompts", "eval.max_new_tokens"]
    out = {}
    for path in fields:
        value = get(path)
        if value is None or value == []:
            continue
        if hasattr(value, "value"):  # an Enum
            value = value.value
        out[path] = list(value) if isinstance(value, (list, tuple)) else value if isinstance(
            value, (int, float, str, bool)) else str(value)
    return out
