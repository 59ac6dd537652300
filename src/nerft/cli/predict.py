"""`nerft predict`: answer sentences with a trained run (hf, vllm) or a server (openai)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log, print_json
from nerft.cli.options import JsonOutput, MinConfidence, OptionalRunDir, Restart, engine_options
from nerft.inference.options import EngineOptions

NAME = "predict"


@engine_options()
def command(
    run_dir: OptionalRunDir = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            "--data",
            help="Records to predict: CLUE NER JSON/JSONL or BIO/BMES (labels optional), or a folder of .txt files (one document each, its id the file name). Texts of any length. With --ray: CLUE NER JSON Lines, a file or a folder of them, here or at a URI pyarrow reads (s3://, gs://, hdfs://).",
        ),
    ] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="One sentence; its entities are printed.")] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Predictions JSON Lines; resumable (default: stdout).")
    ] = None,
    keep_unsupported: Annotated[
        bool, typer.Option("--keep-unsupported", help="Keep entities that are not substrings of their sentence.")
    ] = False,
    min_confidence: MinConfidence = None,
    shard_rows: Annotated[
        Optional[int],
        typer.Option(
            "--shard-rows",
            min=1,
            help="Write --out as a folder of shards of N rows each (part-00000.jsonl, ...), in input order: for a corpus too large for one file. Resumable like a file.",
        ),
    ] = None,
    restart: Restart = False,
    json_output: JsonOutput = False,
    *,
    options: EngineOptions,
) -> None:
    """Predict entities: --data FILE, --text "...", or sentences on stdin (one a line, or JSON records)."""
    from nerft.data.records import CluenerRecord
    from nerft.errors import ConfigError
    from nerft.inference.predict import predict, records_from_lines
    from nerft.runfolder import load_run

    if data is not None and text is not None:
        raise ConfigError("give --data or --text, not both")
    remote = data is not None and "://" in data
    inputs = {"--data": None if remote else data}
    if shard_rows is not None:
        _check_shard_folder(out, inputs)
    elif out is not None:
        from nerft.inference.predictions import partial_path
        from nerft.io import refuse_collisions

        refuse_collisions(inputs, {"--out": out, "its partial file": partial_path(out)})
    run = load_run(run_dir) if run_dir is not None else None
    if run is None and options.endpoint is None:
        raise ConfigError("nothing to predict with: give --run RUN_DIR (a trained run) or --endpoint URL (a server)")
    labels = run.labels if run else None
    if text is not None:
        records = [CluenerRecord(text=text.strip(), labelled=False)]
    elif data is not None and options.ray is not None:
        records = data  # read on the cluster by Ray Data, each line checked there
    elif data is not None and not remote and Path(data).is_dir():
        from nerft.inference.documents import TextFolder

        records = TextFolder(Path(data))
    elif data is not None:
        from nerft.data.load import stream_records

        if remote:
            raise ConfigError(f"--data {data}: a URI is read with --ray; download it to predict here")
        records = stream_records(Path(data), labels)  # checked first, then read as predicted: any size
    else:
        if sys.stdin.isatty():
            log("reading sentences from stdin, one a line; end with Ctrl-D")
        records = records_from_lines(
            getattr(sys.stdin, "buffer", sys.stdin), labels=labels
        )  # bytes: a bad one is found on its line

    rows: list[dict] = []
    write_row = rows.append if text is not None else (None if out is not None else _print_row)
    counts = predict(
        records,
        run=run,
        options=options,
        out=out,
        sink=write_row,
        keep_unsupported=keep_unsupported,
        min_confidence=min_confidence,
        input_file=data if data is not None and not remote and Path(data).is_file() else None,
        restart=restart,
        shard_rows=shard_rows,
    )
    if text is not None:
        _show_entities(rows[0], json_output)
        return
    log(
        counts.summary(out)
        + (f" ({_shards(counts.records, shard_rows)} of at most {shard_rows} rows)" if shard_rows else "")
    )
    if json_output and out is not None:
        print_json(counts.to_dict())


def _check_shard_folder(out: Path | None, inputs: dict) -> None:
    """Refuse, before any work, a --shard-rows --out that cannot be a folder of shards."""
    from nerft.errors import ConfigError
    from nerft.inference.predictions import SHARD_FOLDER_HINT, partial_path, shard_folder_problem
    from nerft.io import refuse_collisions

    if out is None:
        raise ConfigError("--shard-rows writes a folder of shards: give it with --out FOLDER")
    if (problem := shard_folder_problem(out)) is not None:
        raise ConfigError(f"--out {out}: {problem}", hint=SHARD_FOLDER_HINT)
    refuse_collisions(inputs, {}, replaced_folders={"--out": out, "its partial folder": partial_path(out)})


def _shards(rows: int, shard_rows: int) -> str:
    count = -(-rows // shard_rows)
    return f"{count} shard{'s' if count != 1 else ''}"


def _print_row(row: dict) -> None:
    typer.echo(json.dumps(row, ensure_ascii=False))


def _show_entities(row: dict, json_output: bool) -> None:
    if json_output:
        print_json(row)
        return
    for entity in row["entities"]:
        confidence = entity.get("confidence")
        typer.echo(f"{entity['label']}\t{entity['text']}" + (f"\t{confidence:.3f}" if confidence is not None else ""))
    if row["unparseable"]:
        log(f"the answer could not be read: {row['predict']!r}")
    elif not row["entities"]:
        log("no entity")
    for entity in row["dropped"]:
        log(f"dropped, not in the sentence: {entity['label']}\t{entity['text']}")
    for entity in row.get("uncertain", []):
        log(f"below --min-confidence: {entity['label']}\t{entity['text']}\t{entity['confidence']:.3f}")
