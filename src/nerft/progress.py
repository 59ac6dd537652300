"""Progress for long steps: on stderr, and only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", every: float = 0.2) -> Iterator[T]:
    """Yield `items`, redrawing `desc: done/total (rate/s)` on stderr at most every `every` seconds.

    Quiet when stderr is not a terminal (logs, pipes, CI), so redirected output stays clean.
    """
    if not sys.stderr.isatty():
        yield from items
        return
    start = last = time.monotonic()
    done = 0
    try:
        for item in items:
            yield item
            done += 1
            now = time.monotonic()
            if now - last >= every:
                last = now
                _draw(desc, done, total, done / max(now - start, 1e-9))
    finally:
        if done:
            _draw(desc, done, total, done / max(time.monotonic() - start, 1e-9))
            sys.stderr.write("\n")
            sys.stderr.flush()


def _draw(desc: str, done: int, total: int | None, rate: float) -> None:
    count = f"{done}/{total}" if total else str(done)
    sys.stderr.write(f"\r{desc}: {count} ({rate:.1f}/s)")
    sys.stderr.flush()
