"""`nerft convert`: records or predictions to and from the annotation tools' formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log, print_json
from nerft.cli.options import JsonOutput

NAME = "convert"


def command(
    source: Annotated[
        Path,
        typer.Argument(
            help="Records (any shape `nerft prepare` reads, Label Studio and doccano exports included) or a `nerft predict` output file."
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="label-studio (JSON tasks + OUT.label_config.xml), doccano (JSONL) or clue (CLUE NER JSONL)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The file to write.")],
    model_version: Annotated[
        str, typer.Option("--model-version", help="Label Studio: the model_version of the pre-annotations.")
    ] = "nerft",
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels",
            help="Label Studio: comma-separated labels the labelling config offers besides those in the file (e.g. the run's).",
        ),
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Convert records or predictions for Label Studio / doccano (predictions become pre-annotations to correct) or back to CLUE."""
    from nerft.data.convert import convert_file, label_config_path
    from nerft.io import refuse_collisions

    refuse_collisions({"SOURCE": source}, {"--out": out, "the labelling config": label_config_path(out)})
    label_list = [label.strip() for label in labels.split(",") if label.strip()] if labels else None
    written = convert_file(source, to=to, out=out, model_version=model_version, labels=label_list)
    if json_output:
        print_json(written)
        return
    kind = "pre-annotated tasks" if written["from"] == "predictions" and to == "label-studio" else "records"
    typer.echo(f"wrote {written['records']} {kind} ({written['entities']} entities) to {out}")
    if "label_config" in written:
        log(f"labelling config for the Label Studio project: {written['label_config']}")
