"""Predicting over records: open an engine for a run or an endpoint, answer every record in order.

from nerft.inference.predict import open_engine, predict_records
engine = open_engine(EngineOptions(engine="hf"), load_run("runs/tiny"))
counts = predict_records(records, engine, fmt, out="runs/tiny/eval/predictions.jsonl")
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import replace

from nerft.data.load import format_errors
from nerft.data.records import CluenerRecord
from nerft.data.validate import CheckedRecord, check_json_record
from nerft.errors import DataError, ServerError
from nerft.inference.engines import ChatRequest, Engine
from nerft.inference.engines.local import open_local_engine
from nerft.inference.engines.ray_actors import RayEngine
from nerft.inference.options import EngineOptions, default_engine
from nerft.inference.predictions import PredictionCounts, ResumablePredictions, file_identity, prediction_row
from nerft.io import sole_writer
from nerft.progress import progress
from nerft.prompts import PromptFormat
from nerft.runfolder import RunInfo


def open_engine(options: EngineOptions, run: RunInfo | None = None) -> Engine:
    """The engine `options` name, for a run folder (`hf`, `vllm`) or an endpoint (`openai`).

    `options.check` refuses what does not go together first. With `options.ray` the engine runs in
    Ray actors (`nerft.inference.engines.ray_actors`), each opening it from `options.local()`.
    """
    options.check(run)
    if options.ray is not None:
        return RayEngine(options, run.run_dir)
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
    input_file: str | os.PathLike | None = None,
    restart: bool = False,
) -> PredictionCounts:
    """Answer every record, in order, into `out` (resumable) and/or `sink` (called per row).

    Records are read as the engine asks for them and each row is written as soon as it is known,
    so `records` may be a stream of any length (`nerft.data.load.stream_records`). `input_file`,
    the file the records come from, is part of what a resumed run must find again; `restart`
    deletes the rows an unfinished run kept instead of resuming (`ResumablePredictions`)."""
    with sole_writer(out):
        return _predict_records(
            records,
            engine,
            fmt,
            out=out,
            sink=sink,
            keep_unsupported=keep_unsupported,
            min_confidence=min_confidence,
            input_file=input_file,
            restart=restart,
        )


def resume_record(engine: Engine, fmt: PromptFormat, input_file: str | os.PathLike | None) -> dict:
    """Everything that decides an answer, kept beside the partial file: a resumed run must answer
    alike (`ResumablePredictions`). Decoding is greedy everywhere, its length bound the format's."""
    prompt = hashlib.sha256(f"{fmt.system}\n{fmt.user_message('')}".encode()).hexdigest()[:16]
    record = {**engine.describe(), "prompt": fmt.name, "prompt_sha256": prompt, "labels": ",".join(fmt.labels)}
    if input_file is not None:
        record["input"] = file_identity(input_file)
    return record


def _predict_records(
    records: Iterable[CluenerRecord],
    engine: Engine,
    fmt: PromptFormat,
    *,
    out: str | os.PathLike | None,
    sink: Callable[[dict], None] | None,
    keep_unsupported: bool,
    min_confidence: float | None,
    input_file: str | os.PathLike | None,
    restart: bool,
) -> PredictionCounts:
    total = len(records) if isinstance(records, Sized) else None
    counts = PredictionCounts(engine=engine.describe())
    store = (
        ResumablePredictions(out, resume_record(engine, fmt, input_file), restart=restart) if out is not None else None
    )
    remaining = iter(records)
    for row in store.resume(remaining) if store else ():
        counts.add(row)
        counts.resumed += 1
        if sink:
            sink(row)
    pending: deque[CluenerRecord] = deque()  # asked of the engine, not answered yet (its read-ahead)

    def requests() -> Iterator[ChatRequest]:
        for record in remaining:
            pending.append(record)
            yield ChatRequest.for_text(fmt, record.text)

    start = time.perf_counter()
    done = 0
    try:
        todo = None if total is None else total - counts.resumed
        for generation in progress(engine.generate(requests()), total=todo, desc="predicting"):
            if not pending:  # an engine bug; never rename an incomplete file into place
                raise RuntimeError(f"the {engine.name} engine answered more requests than it was given")
            row = prediction_row(
                pending.popleft(),
                generation,
                fmt=fmt,
                keep_unsupported=keep_unsupported,
                min_confidence=min_confidence,
            )
            if store:
                store.append(row)
            if sink:
                sink(row)
            counts.add(row)
            done += 1
        if pending:
            raise RuntimeError(f"the {engine.name} engine answered {done} of {done + len(pending)} requests")
        if next(remaining, None) is not None:
            raise RuntimeError(f"the {engine.name} engine stopped asking for requests after {done}")
        if store:
            store.finish()
    except ServerError as exc:
        if store is None:
            raise
        have = counts.resumed + done
        of, others = (f" of {total}", f"the other {total - have}") if total is not None else ("", "the others")
        raise ServerError(
            f"{exc.message}; {have}{of} predictions kept in {store.partial}",
            hint="; ".join(filter(None, [exc.hint, f"run the same command again to predict {others}"])),
        ) from None
    finally:
        if store:
            store.close()
        counts.records = counts.resumed + done
        counts.seconds = time.perf_counter() - start
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
    input_file: str | os.PathLike | None = None,
    restart: bool = False,
) -> PredictionCounts:
    """Open the engine of `options`, answer `records`, close the engine.

    The prompt format is the run's; `options.prompt` names one only for an endpoint without a run
    folder. `out` is locked for this process (`nerft.io.sole_writer`) before any model loads.
    """
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
                input_file=input_file,
                restart=restart,
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
