"""Plots of evaluation results (matplotlib, Agg: no display needed): PNG files, or SVG text
for the self-contained report.html (pass `path=None`).

Figures are built with the object API (`Figure`), not pyplot, so plotting keeps no global
state and works in any thread or headless process.
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Point = tuple[float, float | None, float | None]  # value, low, high (bounds may be None)

# SVG for inline pages: text stays text (a few KB instead of glyph paths, selectable, read by
# screen readers) and a fixed hash salt makes element ids, hence the page, reproducible.
SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "clo-recipes", "font.family": "sans-serif"}


def finish(figure: Figure, path: Path | None) -> Path | str:
    """Save `figure` as a PNG at `path`, or return it as inline SVG markup when `path` is None."""
    if path is not None:
        figure.savefig(path, bbox_inches="tight", pad_inches=0.15)  # keeps an outside legend
        return path
    buffer = io.StringIO()
    with matplotlib.rc_context(SVG_RC):
        figure.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.15, metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
    text = re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    return _compact_svg(text)


def _compact_svg(text: str) -> str:
    """A third of the bytes, the same picture: no indentation, the font fallback list once as
    `sans-serif`, coordinates inside tags to 0.1 pt (text content is left alone)."""
    text = re.sub(r">\s+<", "><", text)
    text = re.sub(r"font-family: [^;\"]*", "font-family: sans-serif", text)
    rounding = re.compile(r"(-?\d+\.\d)\d+")
    return re.sub(r"<[^>]+>", lambda tag: rounding.sub(r"\1", tag.group(0)), text)


def grouped_bars(path: Path | None, *, title: str, groups: Sequence[str], series: dict[str, Sequence[Point | None]],
                 ylabel: str, ylim: tuple[float, float] = (0.0, 1.0), reference: float | None = None) -> Path | str:
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
    return finish(figure, path)


def line_plot(path: Path | None, *, title: str, lines: dict[str, Sequence[tuple[float, Point]]], xlabel: str,
              ylabel: str, log2_x: bool = True, ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path | str:
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
    return finish(figure, path)


def curve_panels(path: Path | None, *, title: str, steps: Sequence[float],
                 panels: Sequence[tuple[str, dict[str, Sequence[float | None]], dict[str, float]]],
                 boundaries: Sequence[float] = ()) -> Path | str:
    """Training curves: one small plot per panel `(ylabel, {line label: values per step},
    {reference label: value})`, two per row, sharing the step axis. References are dashed
    horizontal lines (e.g. the frozen reference model's mean log-probs); `boundaries` marks
    where a training phase starts."""
    columns = 2 if len(panels) > 1 else 1
    rows = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(4.2 * columns, 2.6 * rows + 0.4), dpi=120, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, (ylabel, lines, references) in enumerate(panels):
        axes = grid[index // columns][index % columns]
        for label, values in lines.items():
            points = [(x, y) for x, y in zip(steps, values) if y is not None]
            (line,) = axes.plot([x for x, _ in points], [y for _, y in points], label=label, linewidth=1.2,
                                marker="." if len(points) < 30 else None)
            if label in references:  # the reference line shares its curve's colour
                axes.axhline(references[label], color=line.get_color(), linestyle="--", linewidth=0.9)
        for label, value in references.items():
            if label not in lines:
                axes.axhline(value, color="grey", linestyle="--", linewidth=0.9, label=label)
        for boundary in boundaries:
            axes.axvline(boundary, color="grey", linestyle=":", linewidth=0.8)
        axes.set_ylabel(textwrap.fill(ylabel, 28), fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    for index in range(len(panels), rows * columns):
        grid[index // columns][index % columns].set_visible(False)
    for axes in grid[-1]:
        axes.set_xlabel("optimizer step", fontsize=8)
    for axes in grid.flat:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title, fontsize=10)
    return finish(figure, path)


def histogram(path: Path | None, *, title: str, groups: dict[str, Sequence[float]], xlabel: str,
              bins: Sequence[float], threshold: float | None = None) -> Path | str:
    """Stacked histogram of one or more groups (e.g. kept and dropped samples); `threshold`
    draws the filter's cut-off."""
    figure = Figure(figsize=(5.5, 3.0), dpi=120)
    axes = figure.subplots()
    present = {label: list(values) for label, values in groups.items() if values}
    if present:
        axes.hist(list(present.values()), bins=list(bins), stacked=True, label=list(present), edgecolor="white")
    if threshold:
        axes.axvline(threshold, color="black", linestyle="--", linewidth=0.9, label=f"threshold {threshold:g}")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("samples")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)
    return finish(figure, path)
