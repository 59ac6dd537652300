"""Predicting over records: open an engine for a run or an endpoint, answer every record in order.

from nerft.inference.predict import open_engine, predict_records
engine = open_engine(EngineOptions(engine="hf"), load_run("runs/tiny"))
counts = predict_records(records, engine, fmt, out="runs/tiny/eval/predictions.jsonl")
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import replace

from nerft.data.load import format_errors
from nerft.data.records import CluenerRecord
from nerft.data.validate import CheckedRecord, check_json_record, lone_surrogate
from nerft.errors import ConfigError, DataError
from nerft.inference.answering import predict_records
from nerft.inference.documents import piece_chars
from nerft.inference.engines import Engine
from nerft.inference.engines.local import open_local_engine
from nerft.inference.options import EngineOptions, default_engine
from nerft.inference.predictions import PredictionCounts
from nerft.io import json_line, sole_writer
from nerft.runfolder import RunInfo


def open_engine(options: EngineOptions, run: RunInfo | None = None) -> Engine:
    """The engine `options` name, for a run folder (`hf`, `vllm`) or an endpoint (`openai`), in this
    process (`--ray` is not one engine: `predict` sends it to `nerft.inference.ray_data`).

    `options.check` refuses what does not go together first."""
    options.check(run)
    if options.ray is not None:
        raise ConfigError("--ray predicts a file or folder (--data, --gold) on a cluster, not sentences one by one")
    return open_local_engine(options, run)


def predict(
    records: Iterable[CluenerRecord],
    *,
    run: RunInfo | None = None,
    options: EngineOptions = EngineOptions(),
    out: str | os.PathLike | None = None,
    sink: Callable[[dict], None] | None = None,
    keep_unsupported: bool = False,
    min_confidence: float | None = None,
    input_file: str | os.PathLike | None = None,
    restart: bool = False,
    shard_rows: int | None = None,
) -> PredictionCounts:
    """Open the engine of `options`, answer `records`, close the engine.

    The prompt format is the run's; `options.prompt` names one only for an endpoint without a run
    folder. `out` is locked for this process (`nerft.io.sole_writer`) before any model loads. Texts
    longer than the run was trained on are predicted in pieces (`nerft.inference.documents.piece_chars`).
    With `options.ray`, `records` is where they are (a path or URI, or the `RecordStream` of a file)
    and Ray Data reads and answers them on the cluster (`nerft.inference.ray_data`).
    """
    if options.ray is not None:
        from nerft.inference.ray_data import predict_on_ray

        options.check(run)
        location = getattr(records, "path", records)
        if not isinstance(location, (str, os.PathLike)):
            raise ConfigError("--ray predicts a file or folder of JSON Lines (--data, --gold), not --text or stdin")
        if options.engine is None:
            options = replace(options, engine=default_engine(endpoint=options.endpoint, run=run))
        with sole_writer(out):
            return predict_on_ray(
                location,
                run=run,
                options=options,
                out=out,
                sink=sink,
                keep_unsupported=keep_unsupported,
                min_confidence=min_confidence,
                restart=restart,
                shard_rows=shard_rows,
            )
    if options.engine is None and not options.endpoint:
        sentences = len(records) if isinstance(records, Sized) else None
        options = replace(options, engine=default_engine(endpoint=None, run=run, sentences=sentences))
    with sole_writer(out):
        opened = open_engine(options, run)
        try:
            fmt = options.prompt_format(run)
            return predict_records(
                records,
                opened,
                fmt,
                out=out,
                sink=sink,
                keep_unsupported=keep_unsupported,
                min_confidence=min_confidence,
                max_chars=piece_chars(run),
                input_file=input_file,
                restart=restart,
                shard_rows=shard_rows,
            )
        finally:
            opened.close()


def records_from_lines(
    lines: Iterable[str], *, source: str = "<stdin>", labels: Sequence[str] | None = None
) -> Iterator[CluenerRecord]:
    """Records typed or piped in: one sentence a line, or one CLUE NER JSON object a line.

    Read as they are predicted, so a pipe of any length streams: the first record is read here
    (none at all is a `DataError` before any model is loaded), a bad later line raises its
    `DataError` when it is reached."""

    def checked_lines() -> Iterator[CheckedRecord]:
        for lineno, line in enumerate(lines, start=1):
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{source}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("{"):
                if (position := lone_surrogate(stripped)) is not None:
                    raise DataError(f"{source}:{lineno}: not UTF-8 text (character {position})")
                yield CheckedRecord(CluenerRecord(text=stripped, labelled=False, source=source, line=lineno))
                continue
            value = json_line(stripped, source, lineno)
            yield check_json_record(value, source, lineno, labels)

    def valid() -> Iterator[CluenerRecord]:
        for checked in checked_lines():
            if checked.errors:
                raise DataError(format_errors(checked.errors))
            if checked.ok:
                yield checked.record

    records = valid()
    first = next(records, None)
    if first is None:
        raise DataError(f"{source}: no sentence to predict")
    return itertools.chain([first], records)
