"""`nerft eval`: score model answers against gold CLUE NER records."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log, print_json, split_labels
from nerft.cli.options import JsonOutput, MinConfidence, OptionalRunDir, Restart, engine_options
from nerft.errors import ConfigError
from nerft.inference.options import EngineOptions
from nerft.io import refuse_collisions, written_together

NAME = "eval"


@engine_options()
def command(
    gold: Annotated[
        Path,
        typer.Option("--gold", help="Gold records: any shape `nerft prepare` reads (CLUE NER JSON/JSONL, BIO/BMES)."),
    ],
    predictions: Annotated[
        Optional[Path],
        typer.Option(
            "--predictions",
            help='JSON Lines with the raw model answer in "predict" (e.g. generated_predictions.jsonl), one per gold record, same order; or the folder of shards `nerft predict --shard-rows` wrote.',
        ),
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option(
            "--report",
            help="Write the full report (scores and per-sentence errors) as JSON, with report.md beside it (default with --run/--endpoint: OUT_DIR/report.json).",
        ),
    ] = None,
    errors: Annotated[
        Optional[Path],
        typer.Option(
            "--errors",
            help="Write one JSON line per sentence with a mistake (default with --run/--endpoint: OUT_DIR/errors.jsonl).",
        ),
    ] = None,
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels",
            help="Comma-separated dataset labels for the per-label table and macro F1 (default: the run's, else those the gold file annotates).",
        ),
    ] = None,
    run_dir: OptionalRunDir = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out-dir",
            help="With --run/--endpoint: where predictions.jsonl (resumable), report.json and errors.jsonl go (default: RUN/eval/GOLD_NAME).",
        ),
    ] = None,
    min_confidence: MinConfidence = None,
    restart: Restart = False,
    json_output: JsonOutput = False,
    *,
    options: EngineOptions,
) -> None:
    """Score predictions with CLUE's per-label P/R/F1 and seqeval's span F1; --run/--endpoint predict them first."""
    label_list = split_labels(labels)
    if predictions is None:
        if run_dir is None and options.endpoint is None:
            raise ConfigError(
                "give --predictions FILE, or --run RUN_DIR / --endpoint URL to predict the gold sentences first"
            )
        from nerft.inference.predictions import partial_path
        from nerft.inference.scoring import predict_and_score, scoring_folder
        from nerft.runfolder import ERRORS, PREDICTIONS, load_run
        from nerft.runfolder import EVAL_REPORT as REPORT

        run = load_run(run_dir) if run_dir is not None else None
        folder = scoring_folder(gold, run, out_dir)
        report, errors = report or folder / REPORT, errors or folder / ERRORS
        score = partial(
            predict_and_score,
            gold=gold,
            run=run,
            options=options,
            labels=label_list,
            out_dir=folder,
            min_confidence=min_confidence,
            restart=restart,
        )
        predicted = {"predictions": folder / PREDICTIONS, "its partial file": partial_path(folder / PREDICTIONS)}
        score_into(
            score, inputs={"--gold": gold}, outputs=predicted, report=report, errors=errors, json_output=json_output
        )
        return
    if run_dir is not None or options.endpoint is not None or options.engine is not None or options.prompt is not None:
        raise ConfigError(
            "--predictions scores a file; --run, --endpoint, --engine and --prompt predict: give one or the other"
        )
    if restart:
        raise ConfigError("--restart is for --run/--endpoint, which predict resumably; --predictions scores a file")
    from nerft.metrics.evaluate import score_prediction_files

    score = partial(
        score_prediction_files, gold=gold, predictions=predictions, labels=label_list, min_confidence=min_confidence
    )
    inputs = {"--gold": gold, "--predictions": predictions}
    score_into(score, inputs=inputs, outputs={}, report=report, errors=errors, json_output=json_output)


def score_into(
    score: Callable, *, inputs: dict, outputs: dict, report: Path | None, errors: Path | None, json_output: bool
) -> None:
    """Score (`score(on_error=...)`, which gets each wrong sentence's row) into the report, its
    pages and the errors file, written together, after every output (`outputs` and those of the
    report and errors) is checked against `inputs`; then say what was written."""
    refuse_collisions(inputs, {**(report_outputs(report) if report is not None else {}), "--errors": errors, **outputs})
    check_report_path(report)
    with written_together(report, errors) as stage:  # the report's lock covers its pages
        with errors_file(stage(errors) if errors is not None else None) as on_error:
            result = score(on_error=on_error)
        data = write_report(result, report=stage(report) if report is not None else None)
    finish(result, data, report=report, json_output=json_output)


def check_report_path(report: Path | None) -> None:
    """A --report path must name a JSON file: any other is taken for a folder by the pages' writer
    (`scores.txt/report.md`), which found a file there after writing the report."""
    if report is not None and report.suffix.lower() != ".json":
        raise ConfigError(
            f"--report {report}: the report is JSON, give a .json path",
            hint="report.md, report.html and the charts are written beside it",
        )


def report_outputs(report: Path) -> dict[str, Path]:
    """Every file `write_report` writes for a --report path, by what it is (the confidence and
    confusion charts beside them too, when the report has them)."""
    from nerft.reporting.errors_page import errors_page_path
    from nerft.reporting.eval_report import eval_paths

    markdown, chart = eval_paths(report)
    return {
        "--report": report,
        "the report's Markdown": markdown,
        "the report's HTML": markdown.with_suffix(".html"),
        "the report's chart": chart,
        "the errors page": errors_page_path(report),
    }


def write_report(result, *, report: Path | None) -> dict:
    """The result as a dict, and with `report`, written there as JSON with report.md, report.html,
    their charts and errors.html beside it (`report` is a staged path: `written_together`)."""
    from nerft.io import write_json_atomic
    from nerft.reporting import write_eval_report
    from nerft.reporting.errors_page import ErrorViews, errors_page_path

    data = result.to_dict()
    if report is not None:
        write_json_atomic(report, data)
        write_eval_report(data, report)
        ErrorViews(getattr(result, "report", result)).write_page(errors_page_path(report))
    return data


def finish(result, data: dict, *, report: Path | None, json_output: bool) -> None:
    """Once the outputs are in place: what was written to stderr, the result on stdout."""
    if report is not None:
        from nerft.reporting.errors_page import errors_page_path
        from nerft.reporting.eval_report import eval_paths

        markdown, chart = eval_paths(report)
        log(f"wrote {report}, {markdown}, {markdown.with_suffix('.html')} and {chart}")
        log(f"wrote {errors_page_path(report)} (every sentence with a mistake, highlighted)")
    if json_output:
        print_json(data)
    else:
        typer.echo(result.format())


def errors_file(path: Path | None) -> contextlib.AbstractContextManager[Callable[[dict], None] | None]:
    """A callback writing each wrong sentence to `path` (JSON Lines) as it is scored, renamed into
    place only when scoring succeeds (`nerft.io.jsonl_writer`); None without a path."""
    from nerft.io import jsonl_writer

    return jsonl_writer(path) if path is not None else contextlib.nullcontext()
