"""Predicting over records: open an engine for a run or an endpoint, answer every record in order.

from nerft.inference.predict import open_engine, predict_records
engine = open_engine(EngineOptions(engine="hf"), load_run("runs/tiny"))
counts = predict_records(records, engine, fmt, out="runs/tiny/eval/predictions.jsonl")
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import replace

from nerft.data.load import format_errors
from nerft.data.records import CluenerRecord
from nerft.data.validate import CheckedRecord, check_json_record, lone_surrogate
from nerft.errors import DataError, ServerError
from nerft.inference.documents import (
    CLUENER_LONGEST_CHARS,
    Span,
    document_row,
    piece_chars,
    piece_record,
    split_document,
)
from nerft.inference.engines import ChatRequest, Engine, Generation
from nerft.inference.engines.local import open_local_engine
from nerft.inference.engines.ray_actors import RayEngine
from nerft.inference.options import EngineOptions, default_engine
from nerft.inference.predictions import PredictionCounts, ResumablePredictions, file_identity, prediction_row
from nerft.io import json_line, sole_writer
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
    max_chars: int = CLUENER_LONGEST_CHARS,
    input_file: str | os.PathLike | None = None,
    restart: bool = False,
) -> PredictionCounts:
    """Answer every record, in order, into `out` (resumable) and/or `sink` (called per row).

    Records are read as the engine asks for them and each row is written as soon as it is known,
    so `records` may be a stream of any length (`nerft.data.load.stream_records`). A text longer
    than `max_chars` is asked about in pieces (`nerft.inference.documents`), which the engine
    batches like any requests; its row is still one row, with offsets in the whole text. `input_file`,
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
            max_chars=max_chars,
            input_file=input_file,
            restart=restart,
        )


def resume_record(
    engine: Engine, fmt: PromptFormat, input_file: str | os.PathLike | None, max_chars: int = CLUENER_LONGEST_CHARS
) -> dict:
    """Everything that decides an answer, kept beside the partial file: a resumed run must answer
    alike (`ResumablePredictions`). Decoding is greedy everywhere, its length bound the format's."""
    prompt = hashlib.sha256(f"{fmt.system}\n{fmt.user_message('')}".encode()).hexdigest()[:16]
    record = {**engine.describe(), "prompt": fmt.name, "prompt_sha256": prompt, "labels": ",".join(fmt.labels)}
    record["piece_chars"] = max_chars
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
    max_chars: int,
    input_file: str | os.PathLike | None,
    restart: bool,
) -> PredictionCounts:
    total = len(records) if isinstance(records, Sized) else None
    counts = PredictionCounts(engine=engine.describe())
    store = (
        ResumablePredictions(out, resume_record(engine, fmt, input_file, max_chars), restart=restart)
        if out is not None
        else None
    )
    remaining = iter(records)
    for row in store.resume(remaining) if store else ():
        counts.add(row)
        counts.resumed += 1
        if sink:
            sink(row)
    # records asked of the engine, not fully answered yet (its read-ahead), with their pieces
    pending: deque[_Document] = deque()
    asked = answered = 0

    def requests() -> Iterator[ChatRequest]:
        nonlocal asked
        for record in remaining:
            document = _Document(record, split_document(record.text, max_chars))
            pending.append(document)
            for piece in document.pieces:
                asked += 1
                yield ChatRequest.for_text(fmt, piece.text)

    def answered_rows() -> Iterator[dict]:
        nonlocal answered
        for generation in engine.generate(requests()):
            yield from finished()
            if not pending:  # an engine bug; never rename an incomplete file into place
                raise RuntimeError(f"the {engine.name} engine answered more requests than it was given")
            document = pending[0]
            document.rows.append(
                prediction_row(
                    document.pieces[len(document.rows)],
                    generation,
                    fmt=fmt,
                    keep_unsupported=keep_unsupported,
                    min_confidence=min_confidence,
                )
            )
            answered += 1
            yield from finished()
        yield from finished()
        if pending:
            raise RuntimeError(f"the {engine.name} engine answered {answered} of {asked} requests")

    def finished() -> Iterator[dict]:
        """The rows of the documents at the front whose pieces are all answered."""
        while pending and len(pending[0].rows) == len(pending[0].pieces):
            document = pending.popleft()
            if not document.spans:  # nothing to ask (blank, or punctuation only): "no entity", from no model
                yield prediction_row(
                    document.record,
                    Generation(fmt.render_output([]), "stop"),
                    fmt=fmt,
                    min_confidence=min_confidence,
                )
            else:
                yield document_row(document.record, document.spans, document.rows, fmt)

    start = time.perf_counter()
    done = 0
    try:
        todo = None if total is None else total - counts.resumed
        for row in progress(answered_rows(), total=todo, desc="predicting"):
            if store:
                store.append(row)
            if sink:
                sink(row)
            counts.add(row)
            done += 1
        if next(remaining, None) is not None:
            raise RuntimeError(f"the {engine.name} engine stopped asking for requests after {answered}")
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


class _Document:
    """A record being predicted: its pieces (`nerft.inference.documents`) and their rows so far."""

    def __init__(self, record: CluenerRecord, spans: list[Span]):
        self.record, self.spans = record, spans
        self.pieces = [piece_record(record, span) for span in spans]
        self.rows: list[dict] = []


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
    folder. `out` is locked for this process (`nerft.io.sole_writer`) before any model loads. Texts
    longer than the run was trained on are predicted in pieces (`nerft.inference.documents.piece_chars`).
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
                max_chars=piece_chars(run),
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
