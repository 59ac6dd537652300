"""How the benchmark scripts print: a plain table (or JSON) on stdout, logs on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned first column, right-aligned numbers, two spaces between columns."""
    cells = [[str(cell) for cell in header], *[[_cell(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def json_text(data: object) -> str:
    """A result as the scripts print it with --json (readable Chinese, indented)."""
    return json.dumps(data, ensure_ascii=False, indent=2)
