"""`clo-recipe compare`: one paper-style table across finished runs.

Rows are models (method arms, and the base model), column groups are target languages, and
each group shows the metrics the runs measured: fidelity on target-language and English
prompts, multiple-choice accuracy, and judge win rates. Metric names are relative to each
run's target language (`fidelity` = on target-language prompts, `fidelity_en` = on English
prompts), so runs for different languages line up.

With a baseline run and a judge, the main model of every other run is also judged against
the baseline run's model on the prompts they share (`xwin`, `xwin_en`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import fmt_share, headline
from .runs import FinishedRun

# (metric key, column header) in display order.
METRICS: tuple[tuple[str, str], ...] = (
    ("fidelity", "fidelity"), ("fidelity_en", "fidelity en"),
    ("mc", "MC acc"), ("mc_en", "MC acc en"),
    ("nll", "NLL"), ("nll_en", "NLL en"),
    ("win", "win"), ("win_en", "win en"),
    ("xwin", "win vs baseline run"), ("xwin_en", "win en vs baseline run"),
)


def relative_metrics(row: dict[str, Any], target: str) -> dict[str, Any]:
    """A `headline()` row with the target-language code replaced by the generic names."""
    out = {}
    for key, stats in row.items():
        for prefix in ("fidelity", "mc", "nll", "win"):
            if key == f"{prefix}_{target}":
                out[prefix] = stats
            elif key == f"{prefix}_en":
                out[f"{prefix}_en"] = stats
        if "metric" in stats:  # an lm-eval task keeps its own name
            out[key] = stats
    return out


@dataclass
class Entry:
    run: str
    model: str
    language: str
    metrics: dict[str, Any]
    row_label: str = ""
    seeds: int = 1  # runs averaged into this row (they differ only in seeds)


@dataclass
class Comparison:
    entries: list[Entry]
    baseline: str | None = None  # "<run>:<model>" when cross-run win rates were judged
    notes: list[str] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(entry.language for entry in self.entries))

    def metric_keys(self) -> list[str]:
        present = {key for entry in self.entries for key in entry.metrics}
        known = [key for key, _ in METRICS if key in present]
        tasks = sorted(present - {key for key, _ in METRICS})
        return known + tasks

    def rows(self) -> list[str]:
        return list(dict.fromkeys(entry.row_label for entry in self.entries))

    def cell(self, row: str, language: str, metric: str) -> dict | None:
        for entry in self.entries:
            if entry.row_label == row and entry.language == language:
                return entry.metrics.get(metric)
        return None


# Fields that only reseed a run: runs equal but for these are repeats of one configuration.
SEED_FIELDS = (("train", "seed"), ("data", "seed"))
_NOT_CONFIGURATION = ("name", "output_dir", "cache_dir")
_UNTRAINED = ("model", "language", "data", "translation", "eval")


def configuration_key(recipe: dict) -> str:
    """The run's resolved recipe without its name, folders and seeds (JSON, sorted keys)."""
    trimmed = {key: value for key, value in recipe.items() if key not in _NOT_CONFIGURATION}
    for section, name in SEED_FIELDS:
        if isinstance(trimmed.get(section), dict):
            trimmed[section] = {k: v for k, v in trimmed[section].items() if k != name}
    return json.dumps(trimmed, sort_keys=True, default=str)


def _mean_over_seeds(group: list[Entry]) -> dict[str, Any]:
    """Per metric measured by every seed: mean, and min-max over seeds as the bracket."""
    out: dict[str, Any] = {}
    for key in group[0].metrics:
        values = [entry.metrics.get(key, {}).get("value") for entry in group]
        if any(value is None for value in values):
            continue
        first = group[0].metrics[key]
        out[key] = {**{k: v for k, v in first.items() if k in ("kind", "metric")},
                    "value": sum(values) / len(values), "low": min(values), "high": max(values),
                    "n": first.get("n"), "seeds": len(values), "per_seed": values}
    return out


def collect(runs: list[FinishedRun], *, aggregate_seeds: bool = True) -> Comparison:
    """Every evaluated model of every run; rows are labelled by model, or `model (run)` when
    two runs contribute the same model for the same language. Runs whose recipes differ only
    in `train.seed` / `data.seed` are one row per model (mean over seeds, [min–max])."""
    entries = []
    groups: dict[tuple, list[Entry]] = {}
    for run in runs:
        if run.report is None:
            raise_missing_report(run)
        for label, row in headline(run.report).items():
            entry = Entry(run.name, label, run.language, relative_metrics(row, run.language))
            key = run.name
            if aggregate_seeds and run.recipe:  # the untrained model depends on no training setting
                key = configuration_key({k: v for k, v in run.recipe.items() if k in _UNTRAINED}
                                        if label == "base" else run.recipe)
            group = groups.setdefault((key, label, run.language), [])
            if not (label == "base" and any(json.dumps(other.metrics, sort_keys=True)
                                            == json.dumps(entry.metrics, sort_keys=True) for other in group)):
                # one base evaluation shared by many runs (the same folder, reused) counts once
                group.append(entry)
    notes = []
    for group in groups.values():
        if len(group) == 1:
            entries.append(group[0])
            continue
        names = [entry.run for entry in group]
        entries.append(Entry(" + ".join(names), group[0].model, group[0].language, _mean_over_seeds(group),
                             seeds=len(group)))
        notes.append(f"{group[0].model} of {', '.join(names)}: {len(group)} seeds, mean [min–max over seeds]")
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        seen[(entry.model, entry.language)] = seen.get((entry.model, entry.language), 0) + 1
    for entry in entries:
        clash = seen[(entry.model, entry.language)] > 1
        seeds = f"{entry.seeds} seeds" if entry.seeds > 1 else ""
        if clash:
            entry.row_label = f"{entry.model} ({entry.run}{', ' + seeds if seeds else ''})"
        else:
            entry.row_label = f"{entry.model} ({seeds})" if seeds else entry.model
    return Comparison(entries, notes=list(dict.fromkeys(notes)))


def raise_missing_report(run: FinishedRun) -> None:
    from clo_recipes.errors import CloError

    raise CloError(f"{run.run_dir} has no finished report stage",
                   hint="finish the run (`clo-recipe run` resumes it) so its report.json exists")


def judge_against_baseline(comparison: Comparison, runs: list[FinishedRun], baseline: FinishedRun, *,
                           endpoint: str, model: str, api_key: str | None, cache_dir: Path,
                           concurrency: int = 4, timeout_s: float = 120.0) -> None:
    """Add `xwin` / `xwin_en` to each run's main model: judged against the baseline run's
    main model on the prompts both answered. Raises `JudgeUnavailable` if the judge is."""
    from clo_recipes.recipe.languages import get_language

    from .judge import ChatClient, VerdictCache, judge_comparisons, win_rates
    from .judge import Comparison as Pair

    base_label = baseline.main_model()
    comparison.baseline = f"{baseline.name}:{base_label}"
    reference = {(r["id"], r["lang"], r["prompt"]): r["answer"] for r in baseline.answers(base_label)}
    client = ChatClient(endpoint, model, api_key, timeout_s=timeout_s)
    cache = VerdictCache(cache_dir / "judge-verdicts.sqlite")
    try:
        for run in runs:
            if run.run_dir == baseline.run_dir:
                continue
            label = run.main_model()
            pairs = [Pair(r["id"], r["lang"], r["prompt"], r["answer"], reference[key])
                     for r in run.answers(label) if (key := (r["id"], r["lang"], r["prompt"])) in reference]
            if not pairs:
                comparison.notes.append(f"{run.name}: no prompt shared with the baseline run, not judged")
                continue
            names = {"en": "English", run.language: get_language(run.language).name}
            records, _ = judge_comparisons(pairs, client, cache, names, concurrency=concurrency)
            rates = win_rates(records)
            entry = next(e for e in comparison.entries if e.run == run.name and e.model == label)
            for lang, stats in rates.items():
                key = "xwin_en" if lang == "en" else "xwin"
                entry.metrics[key] = {"value": stats["win_rate"], "low": stats["low"],
                                      "high": stats["high"], "n": stats["n"]}
    finally:
        cache.close()


def _header(metric: str, baseline: str | None) -> str:
    header = dict(METRICS).get(metric, metric)
    return header.replace("baseline run", baseline) if baseline else header


def rich_table(comparison: Comparison):
    from rich.table import Table

    table = Table(title="comparison across runs", title_justify="left", show_lines=False)
    table.add_column("model", style="bold")
    metrics = comparison.metric_keys()
    for language in comparison.languages:
        for metric in metrics:
            table.add_column(f"{language} · {_header(metric, comparison.baseline)}", justify="right")
    for row in comparison.rows():
        table.add_row(row, *[fmt_share(comparison.cell(row, language, metric), metric.startswith(("fidelity", "nll", "win", "xwin")))
                             for language in comparison.languages for metric in metrics])
    table.caption = "\n".join(["% [95% interval]; fidelity and win rates per prompt language; "
                               "NLL in nats per token (lower is better)", *comparison.notes])
    table.caption_justify = "left"
    return table


def markdown(comparison: Comparison) -> str:
    metrics = comparison.metric_keys()
    header = ["model"] + [f"{language} · {_header(metric, comparison.baseline)}"
                          for language in comparison.languages for metric in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison.rows():
        cells = [fmt_share(comparison.cell(row, language, metric), metric.startswith(("fidelity", "nll", "win", "xwin")))
                 for language in comparison.languages for metric in metrics]
        lines.append("| " + " | ".join([row, *cells]) + " |")
    return "\n".join(["# Comparison", "", *lines, "", *[f"- {note}" for note in comparison.notes]]).rstrip() + "\n"


def write_comparison(comparison: Comparison, folder: Path, runs: list[FinishedRun] = (),
                     html: Path | None = None) -> list[Path]:
    """compare.json, compare.md, one grouped bar chart per metric family present, and the
    self-contained page (`html`, default `<folder>/compare.html`) linking each run's page."""
    from .plots import grouped_bars

    folder.mkdir(parents=True, exist_ok=True)
    document = {"baseline": comparison.baseline, "notes": comparison.notes,
                "entries": [{"run": e.run, "model": e.model, "row": e.row_label, "language": e.language,
                             "seeds": e.seeds, "metrics": e.metrics} for e in comparison.entries]}
    written = [folder / "compare.json", folder / "compare.md"]
    written[0].write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written[1].write_text(markdown(comparison), encoding="utf-8")
    titles = {"fidelity": "answers in the target language (target-language prompts)",
              "mc": "multiple-choice accuracy (target language)",
              "win": "judge win rate vs each run's baseline (target-language prompts)",
              "xwin": f"judge win rate vs {comparison.baseline} (target-language prompts)"}
    for metric, ylabel in (("fidelity", "share of answers"), ("mc", "accuracy"),
                           ("win", "win rate (ties = ½)"), ("xwin", "win rate (ties = ½)")):
        if metric not in comparison.metric_keys():
            continue
        series = {}
        for row in comparison.rows():
            points = []
            for language in comparison.languages:
                stats = comparison.cell(row, language, metric)
                points.append((stats["value"], stats["low"], stats["high"]) if stats else None)
            if any(points):
                series[row] = points
        written.append(grouped_bars(folder / f"compare_{metric}.png", title=titles[metric], groups=comparison.languages,
                                    series=series, ylabel=ylabel,
                                    reference=0.5 if metric in ("win", "xwin") else None))

    from .pages.across import render_compare_page

    html = Path(html) if html else folder / "compare.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(render_compare_page(comparison, list(runs), html.parent.resolve()), encoding="utf-8")
    return [*written, html]
