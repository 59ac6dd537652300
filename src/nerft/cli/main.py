"""The `nerft` application: registers one command per module under `nerft.cli`.

Only typer and nerft's light modules are imported here so `nerft --help` stays fast; torch,
transformers and llamafactory are imported inside the functions that use them.
"""

from __future__ import annotations

import typer

from nerft import __version__
from nerft.cli import (
    convert,
    demo,
    doctor,
    download,
    evaluate,
    export,
    predict,
    prepare,
    report,
    select,
    serve,
    train,
)
from nerft.cli.common import NerftCommand, guarded

app = typer.Typer(
    name="nerft",
    help="Fine-tune chat LLMs for named-entity recognition with LLaMA-Factory: prepare, train, export, serve, predict, eval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for module in (prepare, train, export, serve, predict, evaluate, select, convert, demo, download, doctor, report):
    app.command(name=module.NAME, help=module.command.__doc__, cls=NerftCommand)(guarded(module.command))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nerft {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """nerft: CLUE NER fine-tuning around LLaMA-Factory."""


def main() -> None:
    app()
