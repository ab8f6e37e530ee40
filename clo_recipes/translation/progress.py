"""A rich progress bar for translation: segments done, throughput and time left."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class ThroughputColumn(ProgressColumn):
    """Segments per second over rich's sliding window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} seg/s" if speed else "- seg/s", style="progress.data.speed")


class _Advance:
    def __init__(self, progress: Progress | None, task_id: int | None):
        self.progress, self.task_id = progress, task_id

    def __call__(self, count: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task_id, count)


@contextmanager
def translation_progress(total: int, description: str, *, enabled: bool | None = None,
                         console: Console | None = None) -> Iterator[_Advance]:
    """Yields `advance(n)`. Shown on a terminal only (enabled=None), never in logs or CI."""
    console = console or Console(stderr=True)
    show = console.is_terminal if enabled is None else enabled
    if not show or total == 0:
        yield _Advance(None, None)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  ThroughputColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console, transient=False) as progress:
        yield _Advance(progress, progress.add_task(description, total=total))
