"""Progress for long steps: a rich bar on stderr (count, rate, time left), only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", every: float = 0.2) -> Iterator[T]:
    """Yield `items`, redrawing a bar of `desc`, done/total, items per second and the time left on
    stderr at most every `every` seconds (without `total`: the count and the rate).

    Quiet when stderr is not a terminal (logs, pipes, CI), so redirected output stays clean.
    """
    if not sys.stderr.isatty():
        yield from items
        return
    # rich (which Typer brings) is imported only where a bar is drawn.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _rate_column()]
    if total is None:
        columns = [TextColumn("{task.description}"), TextColumn("{task.completed}"), _rate_column()]
    else:
        columns.append(TimeRemainingColumn())
    console = Console(file=sys.stderr, force_terminal=True)
    with Progress(*columns, console=console, auto_refresh=False) as bar:
        task = bar.add_task(desc, total=total)
        last = time.monotonic()
        for item in items:
            yield item
            bar.advance(task)
            now = time.monotonic()
            if now - last >= every:
                last = now
                bar.refresh()
        bar.refresh()


def _rate_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f}/s" if speed else "-/s")

    return RateColumn()
