"""The run's final summary as a rich table (shown by `clo-recipe run` when it finishes)."""

from __future__ import annotations

from rich.table import Table

from .report import fmt_share, headline


def summary_table(report: dict) -> Table:
    """One row per model: fidelity, multiple-choice accuracy and judge win rate, target
    language and English; skipped suites are listed in the caption."""
    target = report["language"]
    langs = [target, "en"]
    rows = headline(report)
    columns: list[tuple[str, str, bool]] = []  # (metric key prefix, header, show interval)
    for prefix, header, interval in (("fidelity", "fidelity", True), ("mc", "MC acc", False), ("nll", "NLL", True),
                                     ("win", "win rate", True)):
        if any(f"{prefix}_{lang}" in row for row in rows.values() for lang in langs):
            columns += [(f"{prefix}_{lang}", f"{header} {lang}", interval) for lang in langs]
    tasks = sorted({key for row in rows.values() for key, stats in row.items() if "metric" in stats})

    judge = report.get("judge") or {}
    title = f"{report['name']}: {report['method']} → {report['language_name']} ({target})"
    table = Table(title=title, title_justify="left")
    table.add_column("model", style="bold")
    for _, header, _ in columns:
        table.add_column(header + (f" vs {judge['baseline']}" if header.startswith("win") else ""), justify="right")
    for task in tasks:
        table.add_column(task, justify="right")
    for label, row in rows.items():
        cells = [fmt_share(row.get(key), interval) for key, _, interval in columns]
        cells += [fmt_share(row.get(task), False) for task in tasks]
        table.add_row(label, *cells)
    notes = ["% of answers in the prompt's language / accuracy / win rate (ties ½), [95% interval]"]
    if any(key.startswith("nll_") for key, _, _ in columns):
        notes.append("NLL: nats per token of the held-out reference answers, lower is better [95% bootstrap]")
    notes += [f"skipped {entry['suite']}" + (f" ({entry['model']})" if entry.get("model") else "")
              + f": {entry['reason']}" for entry in report.get("skipped", [])]
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table
