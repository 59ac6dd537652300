"""Texts of any length: split into pieces the model was trained on, answered, put back together.

A model fine-tuned on CLUENER has seen sentences of at most 50 characters; a 3,000-character
article given to it as one prompt is far outside what it learned. `split_document` cuts a text
into pieces no longer than a budget of characters (`piece_chars`, from the run's training data),
and `document_row` joins the pieces' prediction rows into one row of the whole text, with entity
offsets in the document: `text[start:end] == entity`, as in every prediction row. The pieces are
never shown: one row per input record, whatever its length.

The rules, in order:
1. A text no longer than the budget is one piece, itself, untouched (a CLUENER sentence is
   predicted exactly as before: same request, same row).
2. A longer text is cut at its line breaks, then at sentence ends: Chinese `。！？；…` (a run of
   them, such as `……` or `！？`, stays together) and Western `.`, `!`, `?` followed by whitespace
   or the end of the line (so "3.14" and "nerft.io" are not ends). Closing quotes and brackets
   right after an end belong to its sentence (`“走吧。”` is one sentence). Each sentence is
   stripped of surrounding whitespace; one without a letter, digit or CJK character (a lone `……`)
   cannot hold an entity and is not asked about.
3. A sentence still longer than the budget is cut into pieces of at most the budget, each at the
   last comma, enumeration comma, colon or space in its second half when there is one (an entity
   rarely spans those), else at the budget itself.
Sentences are not packed together: a piece is one sentence, the unit the model was trained on,
and the requests are batched by the engines anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from nerft.data.records import CluenerRecord
from nerft.errors import DataError
from nerft.io import read_json, read_text
from nerft.metrics.parse import parse_output
from nerft.prompts import PromptFormat
from nerft.runfolder import RunFolder, RunInfo

# CLUENER's longest sentence (train, dev and test alike): no run's budget is below it, so every
# CLUENER-size sentence stays one piece even for a run trained on shorter ones.
CLUENER_LONGEST_CHARS = 50
TEMPLATE_OVERHEAD_TOKENS = 32  # special tokens, role names and newlines of a chat template, generously

_CLOSERS = "”’\"'」』）)》〉】]}"
_SENTENCE_END = re.compile(rf"(?:[。！？；…]+|[.!?]+(?=[{re.escape(_CLOSERS)}]*(?:\s|$)))[{re.escape(_CLOSERS)}]*")
_LINE = re.compile(r"[^\r\n]+")
_SOFT_BREAKS = "，、,：:；; \t\u3000"
_WORD = re.compile(r"\w")


class Span(NamedTuple):
    """A piece of a document: `text[start:end]` (`end` exclusive)."""

    start: int
    end: int


def split_document(text: str, max_chars: int) -> list[Span]:
    """The pieces of `text` to predict, in order, by the rules of the module docstring."""
    if len(text) <= max_chars:
        return [Span(0, len(text))]
    pieces: list[Span] = []
    for sentence in sentence_spans(text):
        pieces.extend(cut_by_length(text, sentence, max_chars))
    return pieces


def sentence_spans(text: str) -> list[Span]:
    """The sentences of `text` (rule 2): no line break inside, no surrounding whitespace."""
    spans: list[Span] = []
    for line in _LINE.finditer(text):
        start = line.start()
        for end_mark in _SENTENCE_END.finditer(text, line.start(), line.end()):
            spans.append(Span(start, end_mark.end()))
            start = end_mark.end()
        spans.append(Span(start, line.end()))
    stripped = [_stripped(text, span) for span in spans]
    return [span for span in stripped if _WORD.search(text, span.start, span.end)]


def cut_by_length(text: str, span: Span, max_chars: int) -> Iterator[Span]:
    """`span` in pieces of at most `max_chars` (rule 3), each stripped of surrounding whitespace."""
    start = span.start
    while span.end - start > max_chars:
        window = text[start : start + max_chars]
        soft = max(window.rfind(mark) for mark in _SOFT_BREAKS)
        cut = start + (soft + 1 if soft >= max_chars // 2 else max_chars)
        piece = _stripped(text, Span(start, cut))
        if piece.end > piece.start:
            yield piece
        start = cut
    piece = _stripped(text, Span(start, span.end))
    if piece.end > piece.start:
        yield piece


def _stripped(text: str, span: Span) -> Span:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end)


def piece_record(record: CluenerRecord, span: Span) -> CluenerRecord:
    """The record a piece is predicted as: `record` itself when the piece is the whole text."""
    if span == (0, len(record.text)):
        return record
    return CluenerRecord(
        text=record.text[span.start : span.end], labelled=False, source=record.source, line=record.line
    )


def document_row(record: CluenerRecord, spans: Sequence[Span], rows: Sequence[dict], fmt: PromptFormat) -> dict:
    """One prediction row (`nerft.inference.predictions.prediction_row`) for the whole of
    `record.text` from the rows of its pieces, in order.

    A text that is its one piece keeps that piece's row. Otherwise entities (and `uncertain` ones)
    are the pieces' own, in document order, their offsets moved by where the piece starts; an
    entity found in two pieces is listed at each place. `predict` is what the pieces named,
    written in the run's answer format (each (label, entity) once, in order of first mention),
    so `nerft eval` reads it like any answer; it is the pieces' raw answers, one a line, when none
    could be read. `dropped` holds each entity not in its piece once; `unparseable` and a
    `finish_reason` of "length" say that some piece was; the `confidence` is that of the least
    confident piece's answer (None when a piece has none): the product of the pieces' would be the
    probability of all the answers, but it falls to 0 for any long document, which would leave
    `nerft select` nothing to rank documents by.
    """
    if len(spans) == 1 and spans[0] == (0, len(record.text)):
        return rows[0]
    entities: list[dict] = []
    uncertain: list[dict] = []
    mentions: dict = {}
    dropped: dict = {}
    for span, row in zip(spans, rows, strict=True):
        entities += [_moved(entity, span.start) for entity in row["entities"]]
        uncertain += [_moved(entity, span.start) for entity in row.get("uncertain", ())]
        mentions.update(dict.fromkeys(parse_output(row["predict"]) or ()))
        dropped.update(dict.fromkeys((entity["label"], entity["text"]) for entity in row["dropped"]))
    unparseable = [row for row in rows if row["unparseable"]]
    confidences = [row["confidence"] for row in rows]
    answer = fmt.render_output(list(mentions))
    if rows and len(unparseable) == len(rows):
        answer = "\n".join(row["predict"] for row in rows)
    document: dict = {} if record.id is None else {"id": record.id}
    document.update(
        text=record.text,
        predict=answer,
        entities=entities,
        dropped=[{"label": label, "text": text} for label, text in dropped],
        unparseable=bool(unparseable),
        finish_reason="length" if any(row["finish_reason"] == "length" for row in rows) else "stop",
        confidence=None if None in confidences else min(confidences),
    )
    if rows and "uncertain" in rows[0]:
        document["uncertain"] = uncertain
    return document


def _moved(entity: dict, offset: int) -> dict:
    if entity["start"] is None:  # kept with --keep-unsupported, not in its piece
        return dict(entity)
    return {**entity, "start": entity["start"] + offset, "end": entity["end"] + offset}


def piece_chars(run: RunInfo | None) -> int:
    """The longest piece to ask `run`'s model about, in characters.

    The longest sentence it was trained on, read from what `nerft prepare` noted about the trained
    datasets (`<name>_meta.json`, `max_chars`): the model has seen texts that long, and nothing
    longer. Without those notes (a dataset registered by hand), from the run's `cutoff_len`: a
    training example is the template, the system prompt and instruction, the sentence and the
    answer, and a compact answer can be as long as its sentence (every character in an entity),
    at about one token per character for Chinese, so half of what is left after the prompt is the
    sentence. Never below CLUENER's longest sentence, nor below it without a run (an endpoint).
    """
    trained = None
    if run is not None:
        trained = trained_sentence_chars(run)
        if trained is None and run.cutoff_len is not None:
            fmt = run.prompt_format()
            prompt = TEMPLATE_OVERHEAD_TOKENS + len(fmt.system) + len(fmt.instruction)
            trained = (run.cutoff_len - prompt) // 2
    return max(CLUENER_LONGEST_CHARS, trained or 0)


def trained_sentence_chars(run: RunInfo) -> int | None:
    """The longest sentence of the datasets `run` trained on, as `nerft prepare` noted it; None
    when the run folder does not say (no rendered arguments, no notes beside the datasets)."""
    folder = RunFolder(run.run_dir)
    settings = folder.settings()
    trained = {name.strip() for name in str(settings.get("dataset") or "").split(",") if name.strip()}
    dataset_dir = Path(settings.get("dataset_dir") or folder.data_dir)
    if not trained or not dataset_dir.is_dir():
        return None
    longest = [
        split["max_chars"]
        for path in sorted(dataset_dir.glob("*_meta.json"))
        for name, split in _noted_splits(path)
        if name in trained and isinstance(split.get("max_chars"), int)
    ]
    return max(longest) if longest else None


def _noted_splits(path: Path) -> Iterator[tuple[str, dict]]:
    """(dataset name, split summary) of a `<name>_meta.json`; nothing from a file of another shape."""
    meta = read_json(path, what="nerft prepare's notes on a dataset")
    names, splits = meta.get("datasets"), meta.get("splits")
    if isinstance(names, dict) and isinstance(splits, dict):
        for split, name in names.items():
            if isinstance(splits.get(split), dict):
                yield name, splits[split]


class TextFolder:
    """The documents of a folder of `.txt` files, in name order: one unlabelled record per file,
    its whole text, with the file name as its `id`. Read one at a time, again on each iteration."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.files = sorted(path for path in self.folder.glob("*.txt") if path.is_file())
        if not self.files:
            raise DataError(f"{self.folder}: no .txt files to predict")

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[CluenerRecord]:
        for path in self.files:
            text = read_text(path)  # decoded as it is: "\r\n" stays two characters, so offsets index the file's text
            yield CluenerRecord(text=text, id=path.name, labelled=False, source=str(path), line=1)
