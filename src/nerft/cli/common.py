"""What every command shares: turning `NerftError` into one line and an exit code, and output."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from nerft.errors import NerftError

DEBUG_VARIABLE = "NERFT_DEBUG"


def guarded(command: Callable) -> Callable:
    """Wrap a command so a `NerftError` ends in `nerft: error: ...` on stderr and its exit code.

    Anything else is a bug and keeps its traceback. With NERFT_DEBUG=1 the traceback of a
    `NerftError` is shown too.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NerftError as exc:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            lines = str(exc).splitlines() or ["unknown error"]
            for line in lines[:-1]:
                typer.echo(line, err=True)
            fail(lines[-1], exc.exit_code)

    return wrapper


def fail(message: str, code: int) -> NoReturn:
    """End the command: `nerft: error: MESSAGE` on stderr, exit `code`."""
    typer.echo(f"nerft: error: {message}", err=True)
    raise typer.Exit(code)


def log(message: str) -> None:
    """Progress and logs go to stderr; stdout is for results."""
    typer.echo(message, err=True)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def split_labels(text: str | None) -> list[str] | None:
    """A comma-separated `--labels` value as a list (None when not given)."""
    if not text:
        return None
    return [label.strip() for label in text.split(",") if label.strip()] or None
