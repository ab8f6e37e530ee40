"""Assemble, render and plot a run's evaluation report.

`report.json` keeps every metric per model and suite with its sample count, and (see
`report_data.py`) every answer, the training curves, the translation's per-sample quality,
settings and versions; `headline()` flattens it to the few numbers tables and plots show;
`render_markdown()` writes the tables and example answers side by side, `pages/run_page.py`
the self-contained report.html from the same document; `write_report()` writes all files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clo_recipes.recipe.languages import get_language

MAX_EXAMPLE_CHARS = 600


def model_order(method: str, baselines: list[str], labels: list[str]) -> list[str]:
    """base, the run's method, its baselines, then anything else, each once."""
    preferred = ["base", method, *baselines]
    return [label for label in dict.fromkeys(preferred + sorted(labels)) if label in labels]


def pick_examples(answers: dict[str, list[dict]], target: str, count: int) -> list[dict]:
    """The first `count` prompts answered by every model, target language first, with each
    model's answer side by side."""
    if count == 0 or not answers:
        return []
    keyed = {label: {(r["id"], r["lang"]): r for r in rows} for label, rows in answers.items()}
    first = next(iter(answers.values()))
    shared = [(r["id"], r["lang"]) for r in first if all((r["id"], r["lang"]) in k for k in keyed.values())]
    shared.sort(key=lambda key: key[1] != target)  # stable: file order within each language
    examples = []
    for key in shared[:count]:
        rows = {label: keyed[label][key] for label in answers}
        sample = next(iter(rows.values()))
        examples.append({
            "id": key[0], "lang": key[1], "prompt": sample["prompt"],
            "answers": {label: {"text": row["answer"], "lang": row["answer_lang"]} for label, row in rows.items()},
        })
    return examples


def build_report(*, name: str, language: str, method: str, baselines: list[str],
                 evaluations: dict[str, dict], judge: dict | None, examples: list[dict],
                 judge_settings: dict | None = None, translation: dict | None = None, **extras: Any) -> dict:
    """The report document. `evaluations` maps model label -> its evaluate `metrics.json`;
    `translation` is the translate stage's outputs (counts, drops, round-trip chrF); `extras`
    are the page's further parts (`answers`, `training`, `translation_samples`, `settings`,
    `versions`, see `report_data.py`), kept only when present."""
    order = model_order(method, baselines, list(evaluations))
    skipped = [{"model": label, **entry} for label in order for entry in evaluations[label].get("skipped", [])]
    if judge is not None and judge.get("status") == "skipped":
        skipped.append({"model": None, "suite": "judge", "reason": judge["reason"]})
    return {
        "name": name,
        "language": language,
        "language_name": get_language(language).name,
        "method": method,
        "baselines": baselines,
        "models": {label: {"weights": evaluations[label].get("weights"),
                           "suites": evaluations[label].get("suites", {})} for label in order},
        "judge": judge,
        "judge_settings": judge_settings,
        "translation": translation,
        "skipped": skipped,
        "examples": examples,
        **{key: value for key, value in extras.items() if value},
    }


def headline(report: dict) -> dict[str, dict[str, Any]]:
    """Per model, the numbers a table shows: `fidelity_<lang>`, `mc_<lang>`, `mc_norm_<lang>`,
    `win_<lang>` (each a dict with value, low, high, n) and `<task>` for lm-eval tasks."""
    rows: dict[str, dict[str, Any]] = {}
    for label, entry in report["models"].items():
        row: dict[str, Any] = {}
        suites = entry["suites"]
        for lang, stats in suites.get("fidelity", {}).items():
            row[f"fidelity_{lang}"] = {"value": stats["share"], "low": stats["low"], "high": stats["high"], "n": stats["n"]}
        for lang, stats in suites.get("mc", {}).get("by_language", {}).items():
            row[f"mc_{lang}"] = {"value": stats["acc"], "low": None, "high": None, "n": stats["n"]}
            row[f"mc_norm_{lang}"] = {"value": stats["acc_norm"], "low": None, "high": None, "n": stats["n"]}
        for lang, stats in suites.get("nll", {}).items():  # nats per answer token, lower is better
            if stats.get("nll") is not None:
                row[f"nll_{lang}"] = {"value": stats["nll"], "low": stats["low"], "high": stats["high"],
                                      "n": stats["n"], "kind": "nll", "ppl": stats["ppl"]}
        for task, stats in suites.get("lm_eval", {}).items():
            metric = next((m for m in ("acc_norm", "acc", "exact_match") if m in stats), None)
            if metric:
                row[task] = {"value": stats[metric], "low": None, "high": None, "n": stats.get("n"), "metric": metric}
        rows[label] = row
    judge = report.get("judge") or {}
    if judge.get("status") == "ok":
        for label, by_lang in judge["models"].items():
            for lang, stats in by_lang.items():
                rows.setdefault(label, {})[f"win_{lang}"] = {
                    "value": stats["win_rate"], "low": stats["low"], "high": stats["high"], "n": stats["n"]}
    return rows


def fmt_share(stats: dict | None, with_interval: bool = True) -> str:
    if not stats or stats.get("value") is None:
        return "–"
    if stats.get("kind") == "nll":  # not a share: nats per token, three decimals
        text = f"{stats['value']:.3f}"
        if with_interval and stats.get("low") is not None:
            text += f" [{stats['low']:.3f}–{stats['high']:.3f}]"
        return text
    text = f"{stats['value'] * 100:.1f}"
    if with_interval and stats.get("low") is not None:
        text += f" [{stats['low'] * 100:.1f}–{stats['high'] * 100:.1f}]"
    return text


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    text = text if len(text) <= MAX_EXAMPLE_CHARS else text[:MAX_EXAMPLE_CHARS] + " …"
    return text.replace("\r", "").replace("\n", "<br>") or "*(empty)*"


def render_markdown(report: dict) -> str:
    target = report["language"]
    langs = [target, "en"]
    rows = headline(report)
    labels = list(report["models"])
    out = [f"# {report['name']}: {report['method']} transfer to {report['language_name']} ({target})", ""]

    if any(f"fidelity_{lang}" in rows[label] for label in labels for lang in langs):
        out += ["## Language fidelity", "",
                "Share of answers in the prompt's language, % [95% Wilson interval].", "",
                _md_table(["model"] + [f"{lang} prompts" for lang in langs] + ["n"],
                          [[label] + [fmt_share(rows[label].get(f"fidelity_{lang}")) for lang in langs]
                           + [str(rows[label].get(f"fidelity_{target}", {}).get("n", "–"))] for label in labels]), ""]

    if any(f"mc_{lang}" in rows[label] for label in labels for lang in langs):
        out += ["## Multiple-choice knowledge", "",
                "Log-likelihood accuracy, % (acc / length-normalised acc_norm).", "",
                _md_table(["model"] + [f"{lang} acc / acc_norm" for lang in langs] + ["n"],
                          [[label] + [f"{fmt_share(rows[label].get(f'mc_{lang}'), False)} / "
                                      f"{fmt_share(rows[label].get(f'mc_norm_{lang}'), False)}" for lang in langs]
                           + [" / ".join(str(rows[label].get(f"mc_{lang}", {}).get("n", "–")) for lang in langs)]
                           for label in labels]), ""]

    if any(f"nll_{lang}" in rows[label] for label in labels for lang in langs):
        out += ["## Held-out answer likelihood", "",
                "NLL of the held-out reference answers given their queries (chat template, answer tokens only), "
                "nats per token [95% sample-bootstrap interval], and perplexity; lower is better. "
                f"{target}: the translated answer to the translated query; en: the English pair.", "",
                _md_table(["model"] + [f"{lang} NLL" for lang in langs] + [f"{lang} ppl" for lang in langs] + ["n"],
                          [[label] + [fmt_share(rows[label].get(f"nll_{lang}")) for lang in langs]
                           + [f"{rows[label][f'nll_{lang}']['ppl']:.2f}" if f"nll_{lang}" in rows[label] else "–"
                              for lang in langs]
                           + [str(rows[label].get(f"nll_{target}", {}).get("n", "–"))] for label in labels]), ""]

    lm_rows = []
    for label in labels:
        for task, stats in report["models"][label]["suites"].get("lm_eval", {}).items():
            for metric in ("acc", "acc_norm", "exact_match"):
                if metric in stats:
                    error = stats.get(f"{metric}_stderr")
                    value = f"{stats[metric] * 100:.1f}" + (f" ± {error * 100:.1f}" if error is not None else "")
                    lm_rows.append([label, task, metric, value, str(stats.get("n", "–"))])
    if lm_rows:
        out += ["## lm-evaluation-harness", "", _md_table(["model", "task", "metric", "%", "n"], lm_rows), ""]

    judge = report.get("judge") or {}
    if judge.get("status") == "ok":
        judged = [label for label in labels if label in judge["models"]]
        out += [f"## Judge win rate against `{judge['baseline']}`", "",
                f"Judge `{judge['judge_model']}`, both orders per prompt, ties count half; % [95% interval].", "",
                _md_table(["model"] + [f"{lang} prompts" for lang in langs] + ["wins / ties / losses"],
                          [[label] + [fmt_share(rows[label].get(f"win_{lang}")) for lang in langs]
                           + [" · ".join(f"{lang}: {s['wins']}/{s['ties']}/{s['losses']}"
                                         for lang, s in judge["models"][label].items())]
                           for label in judged]), ""]

    out += translation_section(report.get("translation"))

    if report.get("training"):
        out += ["## Training", "", "Loss at the first and last logged step (curves: report.html).", "",
                _md_table(["model", "steps", "first loss", "last loss"],
                          [[arm, str(len(curves["steps"])), *(f"{curves['metrics']['loss'][i]:.4f}"
                                                              if curves["metrics"].get("loss") else "–" for i in (0, -1))]
                           for arm, curves in report["training"].items() if curves["steps"]]), ""]

    if report["skipped"]:
        out += ["## Skipped", ""]
        out += [f"- **{entry['suite']}**" + (f" ({entry['model']})" if entry.get("model") else "")
                + f": {entry['reason']}" for entry in report["skipped"]]
        out.append("")

    if report["examples"]:
        out += ["## Example answers", ""]
        for example in report["examples"]:
            out += [f"**[{example['lang']}] {example['id']}**: {_md_cell(example['prompt'])}", ""]
            answers = example["answers"]
            out += [_md_table([f"{label} ({answers[label]['lang']})" for label in answers],
                              [[_md_cell(answers[label]["text"]) for label in answers]]), ""]
    if report.get("answers"):
        out += [f"Every answer ({len(report['answers'])} prompts), side by side with its detected language: report.html.", ""]
    if report.get("settings") or report.get("versions"):
        out += ["## Setup", "", _md_table(["setting", "value"], [[key, str(value)] for key, value in
                                                                  {**report.get("settings", {}),
                                                                   **report.get("versions", {})}.items()]), ""]
    return "\n".join(out)


def translation_section(translation: dict | None) -> list[str]:
    """The training data's translation: what was kept and dropped, and the round-trip chrF."""
    if not translation:
        return []
    drops = ", ".join(f"{reason} {count}" for reason, count in translation.get("dropped_by_reason", {}).items() if count)
    # A translate stage's outputs from before backend/language were recorded (older runs,
    # stand-in stages) still render: only what is known is said.
    backend, model = translation.get("backend"), translation.get("model")
    who = (f"`{backend}`" if backend else "The translation") + (f" ({model})" if model else "")
    language = translation.get("language", "target")
    out = ["## Translation", "",
           f"{who} en→{language}: {translation.get('translated', '?')} training and "
           f"{translation.get('eval_translated', '?')} held-out samples kept, {translation.get('dropped', 0)} dropped"
           + (f" ({drops})" if drops else "") + "; `dropped.jsonl` of the translate stage lists them.", ""]
    trip = translation.get("round_trip")
    if trip and trip.get("count"):
        quantiles = ["min", "p10", "p25", "median", "p75", "p90", "max"]
        out += [f"Round trip {language}→en: chrF (0-100) of each back-translation against its "
                "English source; a sample scores the lower of its query and answer.", "",
                _md_table(["samples", "mean", *quantiles, f"dropped (< {trip['threshold']:g})"],
                          [[str(trip["count"]), f"{trip['mean']:.1f}", *(f"{trip[q]:.1f}" for q in quantiles),
                            str(trip["dropped"])]]), ""]
    return out


def write_plots(report: dict, folder: Path) -> list[Path]:
    from .plots import grouped_bars

    rows = headline(report)
    labels = list(report["models"])
    target = report["language"]
    langs = [target, "en"]
    written = []

    def points(prefix: str, models: list[str]) -> dict[str, list]:
        return {label: [(s["value"], s["low"], s["high"]) if (s := rows.get(label, {}).get(f"{prefix}_{lang}")) else None
                        for lang in langs] for label in models}

    if any(f"fidelity_{lang}" in rows[label] for label in labels for lang in langs):
        written.append(grouped_bars(folder / "fidelity.png", title=f"{report['name']}: answers in the prompt's language",
                                    groups=[f"{lang} prompts" for lang in langs], series=points("fidelity", labels),
                                    ylabel="share of answers"))
    if any(f"mc_{lang}" in rows[label] for label in labels for lang in langs):
        written.append(grouped_bars(folder / "accuracy.png", title=f"{report['name']}: multiple-choice accuracy",
                                    groups=[f"{lang}" for lang in langs], series=points("mc", labels),
                                    ylabel="accuracy"))
    judge = report.get("judge") or {}
    if judge.get("status") == "ok":
        judged = [label for label in labels if label in judge["models"]]
        written.append(grouped_bars(folder / "win_rate.png", title=f"{report['name']}: win rate vs {judge['baseline']}",
                                    groups=[f"{lang} prompts" for lang in langs], series=points("win", judged),
                                    ylabel="win rate (ties = ½)", reference=0.5))
    return written


def write_report(report: dict, folder: Path) -> list[Path]:
    """report.json, report.md, report.html and the plots; returns the paths written."""
    from .pages.run_page import render_run_page

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report) + "\n", encoding="utf-8")
    (folder / "report.html").write_text(render_run_page(report), encoding="utf-8")
    return [folder / "report.json", folder / "report.md", folder / "report.html", *write_plots(report, folder)]
