"""`nerft select`: the unlabelled sentences whose predictions are least confident, as Label Studio tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log, print_json
from nerft.cli.options import JsonOutput, OptionalRunDir, engine_options
from nerft.inference.options import EngineOptions

NAME = "select"


@engine_options()
def command(
    out: Annotated[
        Path,
        typer.Option("--out", help="Label Studio tasks (JSON), with OUT.label_config.xml beside it."),
    ],
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="Unlabelled sentences to predict (any shape `nerft predict --data` reads)."),
    ] = None,
    predictions: Annotated[
        Optional[Path],
        typer.Option("--predictions", help="A `nerft predict` output to choose from instead of predicting."),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many sentences to choose.")] = 50,
    run_dir: OptionalRunDir = None,
    model_version: Annotated[
        str, typer.Option("--model-version", help="The model_version of the pre-annotations (default: the run's name).")
    ] = "",
    json_output: JsonOutput = False,
    *,
    options: EngineOptions,
) -> None:
    """Choose the N sentences whose predictions are least confident and write them as Label Studio tasks with pre-annotations."""
    from nerft.data.annotation import record_of_prediction
    from nerft.data.convert import label_config_path, write_converted
    from nerft.errors import ConfigError
    from nerft.inference.select import LeastConfident, check_confidences, describe, rows_of_predictions
    from nerft.io import refuse_collisions, sole_writer
    from nerft.runfolder import load_run

    if (data is None) == (predictions is None):
        raise ConfigError("give --data FILE (sentences to predict) or --predictions FILE (a `nerft predict` output)")
    refuse_collisions(
        {"--data": data, "--predictions": predictions},
        {"--out": out, "the labelling config": label_config_path(out)},
    )
    with sole_writer(out):  # before any model loads: a second select to OUT stops at once
        chosen = LeastConfident(count)
        run = load_run(run_dir) if run_dir is not None else None
        if predictions is not None:
            if run_dir is not None or options.endpoint is not None or options.engine is not None:
                raise ConfigError(
                    "--predictions chooses from a file; --run, --endpoint and --engine predict: give one or the other"
                )
            for row in rows_of_predictions(predictions):
                chosen.add(row)
            source = str(predictions)
        else:
            if run is None and options.endpoint is None:
                raise ConfigError(
                    "nothing to predict with: give --run RUN_DIR or --endpoint URL, or --predictions FILE"
                )
            from nerft.data.load import stream_records
            from nerft.inference.predict import predict

            records = stream_records(data, run.labels if run else None)
            counts = predict(records, run=run, options=options, sink=chosen.add)
            log(counts.summary())
            source = str(data)
        check_confidences(chosen, source)
        rows = chosen.rows()
        version = model_version or (run.run_dir.name if run is not None else "nerft")
        labels = run.labels if run is not None else None
        written = write_converted(
            [(record_of_prediction(row), row) for row in rows],
            to="label-studio",
            out=out,
            model_version=version,
            labels=labels,
            source=True,
        )
        written.update(seen=chosen.seen, chosen=len(rows), without_confidence=chosen.unknown)
        if json_output:
            print_json(written)
            return
        typer.echo(
            f"wrote the {len(rows)} least confident of {chosen.seen} sentences ({describe(rows)}) as Label Studio tasks to {out}"
        )
        log(f"labelling config for the Label Studio project: {written['label_config']}")
