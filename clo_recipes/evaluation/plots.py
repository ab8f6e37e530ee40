"""PNG plots of evaluation results (matplotlib, Agg: no display needed).

Figures are built with the object API (`Figure`), not pyplot, so plotting keeps no global
state and works in any thread or headless process.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

Point = tuple[float, float | None, float | None]  # value, low, high (bounds may be None)


def grouped_bars(path: Path, *, title: str, groups: Sequence[str], series: dict[str, Sequence[Point | None]],
                 ylabel: str, ylim: tuple[float, float] = (0.0, 1.0), reference: float | None = None) -> Path:
    """One group of bars per entry of `groups` (e.g. languages), one bar per series (e.g.
    models) with its confidence interval as an error bar; missing values leave a gap."""
    figure = Figure(figsize=(max(4.5, 1.2 + 1.1 * len(groups) * max(1, len(series)) * 0.6), 3.6), dpi=120)
    axes = figure.subplots()
    width = 0.8 / max(1, len(series))
    for index, (label, points) in enumerate(series.items()):
        xs, heights, errors_low, errors_high = [], [], [], []
        for group_index, point in enumerate(points):
            if point is None or point[0] is None:
                continue
            value, low, high = point
            xs.append(group_index - 0.4 + width * (index + 0.5))
            heights.append(value)
            errors_low.append(value - low if low is not None else 0.0)
            errors_high.append(high - value if high is not None else 0.0)
        bars = axes.bar(xs, heights, width * 0.92, label=label, yerr=[errors_low, errors_high], capsize=3)
        axes.bar_label(bars, labels=[f"{h:.0%}" if ylim == (0.0, 1.0) else f"{h:.2f}" for h in heights],
                       fontsize=7, padding=2)
    if reference is not None:
        axes.axhline(reference, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xticks(range(len(groups)), groups)
    # Headroom above the top tick so value labels of full bars stay inside the axes.
    axes.set_ylim(ylim[0], ylim[1] + 0.12 * (ylim[1] - ylim[0]))
    axes.set_yticks([ylim[0] + step * (ylim[1] - ylim[0]) / 5 for step in range(6)])
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.savefig(path, bbox_inches="tight", pad_inches=0.15)  # keeps the outside legend
    return path


def line_plot(path: Path, *, title: str, lines: dict[str, Sequence[tuple[float, Point]]], xlabel: str,
              ylabel: str, log2_x: bool = True, ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path:
    """Metric against a numeric axis (sample count), one line per label, interval as a band."""
    figure = Figure(figsize=(5.5, 3.8), dpi=120)
    axes = figure.subplots()
    for label, points in lines.items():
        points = sorted((x, p) for x, p in points if p is not None and p[0] is not None)
        if not points:
            continue
        xs = [x for x, _ in points]
        (line,) = axes.plot(xs, [p[0] for _, p in points], marker="o", label=label)
        if all(p[1] is not None and p[2] is not None for _, p in points):
            # the band in its line's colour: fills draw from their own colour cycle
            axes.fill_between(xs, [p[1] for _, p in points], [p[2] for _, p in points], alpha=0.15,
                              color=line.get_color())
    if log2_x:
        axes.set_xscale("log", base=2)
        all_x = sorted({x for points in lines.values() for x, _ in points})
        axes.set_xticks(all_x, [f"{x:g}" for x in all_x])
        axes.minorticks_off()
    if ylim:
        axes.set_ylim(*ylim)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(textwrap.fill(ylabel, 36))  # long metric names would run off the figure
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, bbox_inches="tight", pad_inches=0.15)
    return path
