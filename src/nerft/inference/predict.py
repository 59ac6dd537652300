"""Predicting over records: open an engine for a run or an endpoint, answer every record in order.

from nerft.inference.predict import open_engine, predict_records
engine = open_engine(EngineOptions(engine="hf"), load_run("runs/tiny"))
counts = predict_records(records, engine, fmt, out="runs/tiny/eval/predictions.jsonl")
"""

from __future__ import annotations

import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import replace

from nerft.data.load import format_errors
from nerft.data.records import CluenerRecord
from nerft.data.validate import CheckedRecord, check_json_record
from nerft.errors import ConfigError, DataError
from nerft.inference.engines import ChatRequest, Engine
from nerft.inference.engines.local import open_local_engine
from nerft.inference.options import EngineOptions, default_engine
from nerft.inference.predictions import (
    PredictionCounts,
    ResumablePredictions,
    keep_resumed,
    prediction_row,
    prediction_source,
    write_rows,
)
from nerft.progress import progress
from nerft.prompts import PromptFormat
from nerft.runfolder import RunInfo


def open_engine(options: EngineOptions, run: RunInfo | None = None) -> Engine:
    """The engine `options` name, for a run folder (`hf`, `vllm`) or an endpoint (`openai`), in this
    process (`--ray` is not one engine: `predict` sends it to `nerft.inference.ray_data`).

    `options.check` refuses what does not go together first."""
    options.check(run)
    if options.ray is not None:
        raise ConfigError("--ray predicts a file or folder (--data, --gold) on a cluster, not sentences one by one")
    return open_local_engine(options, run)


def predict_records(
    records: Iterable[CluenerRecord],
    engine: Engine,
    fmt: PromptFormat,
    *,
    out: str | os.PathLike | None = None,
    sink: Callable[[dict], None] | None = None,
    keep_unsupported: bool = False,
    min_confidence: float | None = None,
) -> PredictionCounts:
    """Answer every record, in order, into `out` (resumable) and/or `sink` (called per row).

    Records are read as the engine asks for them and each row is written as soon as it is known,
    so `records` may be a stream of any length (`nerft.data.load.stream_records`)."""
    total = len(records) if isinstance(records, Sized) else None
    counts = PredictionCounts(engine=engine.describe())
    store = ResumablePredictions(out, prediction_source(engine.describe(), fmt)) if out is not None else None
    remaining = iter(records)
    if store:
        keep_resumed(store, remaining, counts, sink)
    pending: deque[CluenerRecord] = deque()  # asked of the engine, not answered yet (its read-ahead)

    def requests() -> Iterator[ChatRequest]:
        for record in remaining:
            pending.append(record)
            yield ChatRequest.for_text(fmt, record.text)

    def rows() -> Iterator[dict]:
        done = 0
        todo = None if total is None else total - counts.resumed
        for generation in progress(engine.generate(requests()), total=todo, desc="predicting"):
            if not pending:  # an engine bug; never rename an incomplete file into place
                raise RuntimeError(f"the {engine.name} engine answered more requests than it was given")
            yield prediction_row(
                pending.popleft(),
                generation,
                fmt=fmt,
                keep_unsupported=keep_unsupported,
                min_confidence=min_confidence,
            )
            done += 1
        if pending:
            raise RuntimeError(f"the {engine.name} engine answered {done} of {done + len(pending)} requests")
        if next(remaining, None) is not None:
            raise RuntimeError(f"the {engine.name} engine stopped asking for requests after {done}")

    write_rows(rows(), store=store, sink=sink, counts=counts, total=total)
    return counts


def predict(
    records: Iterable[CluenerRecord],
    *,
    run: RunInfo | None = None,
    options: EngineOptions = EngineOptions(),
    out: str | os.PathLike | None = None,
    sink: Callable[[dict], None] | None = None,
    keep_unsupported: bool = False,
    min_confidence: float | None = None,
) -> PredictionCounts:
    """Open the engine of `options`, answer `records`, close the engine.

    The prompt format is the run's; `options.prompt` names one only for an endpoint without a run folder.
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
        return predict_on_ray(
            location,
            run=run,
            options=options,
            out=out,
            sink=sink,
            keep_unsupported=keep_unsupported,
            min_confidence=min_confidence,
        )
    if options.engine is None and not options.endpoint:
        sentences = len(records) if isinstance(records, Sized) else None
        options = replace(options, engine=default_engine(endpoint=None, run=run, sentences=sentences))
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
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith("{"):
                yield CheckedRecord(CluenerRecord(text=stripped, labelled=False, source=source, line=lineno))
                continue
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise DataError(f"{source}:{lineno}: broken JSON ({exc.msg})") from None
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
