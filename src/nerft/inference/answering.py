"""Answering records with an opened engine, in order: the one loop every way of predicting runs
(single-process predict and eval, and each Ray Data actor of `--ray`).

A text longer than the run's sentences is asked about in pieces (`nerft.inference.documents`); the
engine batches the pieces like any requests, and each record's row is written as soon as all its
pieces are answered, so `records` may be a stream of any length.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized

from nerft.data.records import CluenerRecord
from nerft.inference.documents import CLUENER_LONGEST_CHARS, Span, document_row, piece_record, split_document
from nerft.inference.engines import ChatRequest, Engine, Generation
from nerft.inference.predictions import (
    PredictionCounts,
    keep_resumed,
    prediction_row,
    resumable,
    write_rows,
)
from nerft.io import sole_writer
from nerft.progress import progress
from nerft.prompts import PromptFormat


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
    shard_rows: int | None = None,
) -> PredictionCounts:
    """Answer every record, in order, into `out` (resumable) and/or `sink` (called per row).

    Records are read as the engine asks for them and each row is written as soon as it is known,
    so `records` may be a stream of any length (`nerft.data.load.stream_records`). A text longer
    than `max_chars` is asked about in pieces (`nerft.inference.documents`), which the engine
    batches like any requests; its row is still one row, with offsets in the whole text. `input_file`,
    the file the records come from, is part of what a resumed run must find again; `restart`
    deletes the rows an unfinished run kept instead of resuming (`ResumablePredictions`); with
    `shard_rows`, `out` is a folder of shards of that many rows (`ShardedPredictions`). `out`
    has one writer, this process, while it is written (`nerft.io.sole_writer`)."""
    total = len(records) if isinstance(records, Sized) else None
    counts = PredictionCounts(engine=engine.describe())
    remaining = iter(records)
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

    def rows() -> Iterator[dict]:
        todo = None if total is None else total - counts.resumed
        yield from progress(answered_rows(), total=todo, desc="predicting")
        if next(remaining, None) is not None:
            raise RuntimeError(f"the {engine.name} engine stopped asking for requests after {answered}")

    with sole_writer(out):
        store = resumable(
            out,
            engine.describe(),
            fmt,
            max_chars=max_chars,
            input_file=input_file,
            restart=restart,
            shard_rows=shard_rows,
        )
        if store:
            keep_resumed(store, remaining, counts, sink)
        write_rows(rows(), store=store, sink=sink, counts=counts, total=total)
    return counts


class _Document:
    """A record being predicted: its pieces (`nerft.inference.documents`) and their rows so far."""

    def __init__(self, record: CluenerRecord, spans: list[Span]):
        self.record, self.spans = record, spans
        self.pieces = [piece_record(record, span) for span in spans]
        self.rows: list[dict] = []
