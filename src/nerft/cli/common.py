"""What every command shares: turning `NerftError` into one line and an exit code, and output."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand

from nerft.errors import NerftError, environment_fault
from nerft.inference import RAY_DEFAULT  # the package's own module: no engine imported at start-up

DEBUG_VARIABLE = "NERFT_DEBUG"
OPTIONAL_VALUES = {"--ray": RAY_DEFAULT}  # options that may be given without their value


def guarded(command: Callable) -> Callable:
    """Wrap a command so a `NerftError` ends in `nerft: error: ...` on stderr and its exit code,
    and so does a fault of the machine (a full disk, a read-only folder: `environment_fault`).

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
        except OSError as exc:
            message = environment_fault(exc)
            if message is None or os.environ.get(DEBUG_VARIABLE):
                raise
            fail(message, NerftError.exit_code)

    return wrapper


class NerftCommand(TyperCommand):
    """A command whose options in `OPTIONAL_VALUES` may come bare: `--ray` alone is `--ray default`.

    Typer's parser has no option with an optional value, so the missing value is put in before it
    parses: where the option is the last word, or the next word is another option or `--`.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_optional_values(args, self._valued_options()))

    def _valued_options(self) -> set[str]:
        return {
            name
            for param in self.params
            if not getattr(param, "is_flag", True) and not param.count  # arguments have no is_flag
            for name in param.opts
        }


def with_optional_values(args: list[str], valued: set[str], defaults: dict[str, str] = OPTIONAL_VALUES) -> list[str]:
    """`args` with the default value after each bare option of `defaults`. `valued` names every
    option that takes a value: the word after one is its value, even when it starts with '-'."""
    out: list[str] = []
    at = 0
    while at < len(args):
        word = args[at]
        out.append(word)
        at += 1
        if word == "--":
            out.extend(args[at:])
            break
        if word in defaults:
            if at == len(args) or args[at].startswith("-"):
                out.append(defaults[word])
        elif word in valued and at < len(args):
            out.append(args[at])
            at += 1
    return out


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
