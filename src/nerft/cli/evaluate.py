"""`nerft eval`: score model answers against gold CLUE NER records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import print_json
from nerft.cli.options import JsonOutput

NAME = "eval"


def command(
    gold: Annotated[Path, typer.Option("--gold", help="Gold records: any shape `nerft prepare` reads (CLUE NER JSON/JSONL, BIO/BMES).")],
    predictions: Annotated[
        Path, typer.Option("--predictions", help='JSON Lines with the raw model answer in "predict" (e.g. generated_predictions.jsonl), one per gold record, same order.')
    ],
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the full report (scores and per-sentence errors) as JSON.")] = None,
    errors: Annotated[Optional[Path], typer.Option("--errors", help="Write one JSON line per sentence with a mistake.")] = None,
    json_output: JsonOutput = False,
) -> None:
    """Score predictions with CLUE's per-label P/R/F1 and seqeval's span F1."""
    from nerft.metrics.evaluate import score_prediction_files

    result = score_prediction_files(gold=gold, predictions=predictions)
    write_outputs(result, report=report, errors=errors)
    if json_output:
        print_json(result.to_dict())
    else:
        typer.echo(result.format())


def write_outputs(result, *, report: Path | None, errors: Path | None) -> None:
    """The report JSON and the errors JSON Lines, each written atomically."""
    from nerft.io import write_json_atomic, write_jsonl_atomic

    if report is not None:
        write_json_atomic(report, result.to_dict())
    if errors is not None:
        write_jsonl_atomic(errors, result.errors())
