"""`nerft eval`: score model answers against gold CLUE NER records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log, print_json
from nerft.cli.options import Endpoint, Engine, JsonOutput, OptionalRunDir
from nerft.errors import ConfigError

NAME = "eval"


def command(
    gold: Annotated[Path, typer.Option("--gold", help="Gold records: any shape `nerft prepare` reads (CLUE NER JSON/JSONL, BIO/BMES).")],
    predictions: Annotated[
        Optional[Path], typer.Option("--predictions", help='JSON Lines with the raw model answer in "predict" (e.g. generated_predictions.jsonl), one per gold record, same order.')
    ] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the full report (scores and per-sentence errors) as JSON.")] = None,
    errors: Annotated[Optional[Path], typer.Option("--errors", help="Write one JSON line per sentence with a mistake.")] = None,
    run_dir: OptionalRunDir = None,
    engine: Engine = None,
    endpoint: Endpoint = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="With --run/--endpoint: where predictions.jsonl, report.json and errors.jsonl go (default: RUN/eval/GOLD_NAME).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name on the endpoint (default: the one it serves).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="NERFT_API_KEY", help="Bearer token for the endpoint.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Sentences per batch (hf, vllm).")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", min=1, help="Requests in flight (openai).")] = None,
    json_output: JsonOutput = False,
) -> None:
    """Score predictions with CLUE's per-label P/R/F1 and seqeval's span F1; --run/--endpoint predict them first."""
    if predictions is None:
        if run_dir is None and endpoint is None:
            raise ConfigError("give --predictions FILE, or --run RUN_DIR / --endpoint URL to predict the gold sentences first")
        if report is not None or errors is not None:
            raise ConfigError("with --run/--endpoint the report and errors go into --out-dir")
        from nerft.inference.scoring import ERRORS, REPORT, predict_and_score
        from nerft.runfolder import load_run

        evaluation = predict_and_score(
            gold=gold, run=load_run(run_dir) if run_dir is not None else None, engine=engine, endpoint=endpoint,
            out_dir=out_dir, model=model, api_key=api_key, batch_size=batch_size, concurrency=concurrency,
        )
        finish(evaluation, report=evaluation.out_dir / REPORT, errors=evaluation.out_dir / ERRORS, json_output=json_output)
        return
    if run_dir is not None or endpoint is not None or engine is not None:
        raise ConfigError("--predictions scores a file; --run, --endpoint and --engine predict: give one or the other")
    from nerft.metrics.evaluate import score_prediction_files

    finish(score_prediction_files(gold=gold, predictions=predictions), report=report, errors=errors, json_output=json_output)


def finish(result, *, report: Path | None, errors: Path | None, json_output: bool) -> None:
    """Write the report JSON (with report.md and its chart) and the errors JSON Lines, each
    atomically, then print the result."""
    from nerft.io import write_json_atomic, write_jsonl_atomic
    from nerft.reporting.errors_page import ErrorViews, errors_page_path

    views = ErrorViews.of(getattr(result, "report", result))  # a ModelEvaluation holds its EvalReport
    data = {**result.to_dict(), "confusion": views.confusion.to_dict()}
    if report is not None:
        write_json_atomic(report, data)
        write_readable_report(data, report)
        log(f"wrote {views.write_page(errors_page_path(report))} (every sentence with a mistake, highlighted)")
    if errors is not None:
        write_jsonl_atomic(errors, data["errors"])
    if json_output:
        print_json(data)
    else:
        typer.echo(result.format())


def write_readable_report(data: dict, report: Path) -> None:
    """report.md (per-label table) and the per-label F1 chart beside report.json."""
    from nerft.cli.common import log
    from nerft.reporting import write_eval_report

    markdown, chart = write_eval_report(data, report)
    log(f"wrote {markdown} and {chart}")
