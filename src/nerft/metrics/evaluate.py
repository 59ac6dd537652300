"""Score raw model answers against gold records: CLUE's set scores, seqeval's span scores, errors.

`evaluate(gold, predictions)` takes the raw answers (one string per gold record, same order);
it scores them twice: as answered (CLUE's official scoring: every predicted string counts), and
with the predicted entities that are not substrings of their sentence dropped, as `nerft predict`
does by default (`in_text` in the report: such an entity can never be a CLUE entity, so dropping
it only removes false positives).

`Evaluator` does the same one sentence at a time, holding only counts and the first
`ERRORS_LISTED` wrong sentences, so a gold file of any size is scored in flat memory; every wrong
sentence goes to its `on_error` callback (`nerft eval` streams them into errors.jsonl).
`iter_predictions(path)` reads the answers from JSON Lines with the answer in "predict", the shape
of LLaMA-Factory's `generated_predictions.jsonl`; `score_prediction_files(...)` streams both files
and is what `nerft eval --predictions` runs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from nerft.data.load import RecordStream, stream_records
from nerft.data.readers import open_text
from nerft.data.records import CluenerRecord
from nerft.errors import DataError
from nerft.io import json_line
from nerft.metrics.clue import ClueScores, ClueTally, SentenceDiff, format_table, split_in_text
from nerft.metrics.confidence import ConfidenceTally, row_confidences
from nerft.metrics.confusion import Confusion, SentenceMistakes, classify_sentence
from nerft.metrics.parse import Mention, parse_output
from nerft.metrics.spans import SpanScores, SpanTally

ERRORS_LISTED = 2000  # sentences with a mistake that report.json and errors.html show in full


@dataclass
class ScoredSentence:
    """One gold sentence, the model's answer and what it got wrong."""

    index: int
    record: CluenerRecord
    answer: str
    mentions: list[Mention] | None  # None: the answer could not be read
    diff: SentenceDiff
    mistakes: SentenceMistakes
    confidences: dict[Mention, float | None] | None = None  # the predicted entities' (predict rows)

    @property
    def wrong(self) -> bool:
        return not self.diff.correct or self.mentions is None

    def error_row(self) -> dict:
        """Its line of errors.jsonl: what was predicted wrongly, what was missed."""
        return {
            "index": self.index,
            "line": self.record.line,
            "text": self.record.text,
            "predict": self.answer,
            "unparseable": self.mentions is None,
            "false_positives": [list(m) for m in self.diff.false_positives],
            "false_negatives": [list(m) for m in self.diff.false_negatives],
        }


@dataclass
class EvalReport:
    records: int
    unparseable: int
    clue: ClueScores
    spans: SpanScores
    clue_in_text: ClueScores  # the same without predicted entities that are not in their sentence
    not_in_text: int  # how many were dropped for `clue_in_text` (distinct per sentence)
    confusion: Confusion
    mistakes: Counter  # every mistake of every sentence, by kind (`nerft.metrics.confusion.KINDS`)
    sentences_with_errors: int
    listed: list[ScoredSentence]  # the first sentences with a mistake (`Evaluator(listed=...)`)
    confidence: dict | None = None  # scores by confidence threshold, calibration (`nerft.metrics.confidence`)
    min_confidence: float | None = None  # entities below it were not scored
    below_min_confidence: int = 0

    def errors(self) -> list[dict]:
        """One row per listed sentence with a mistake (every one, unless more than were listed)."""
        return [sentence.error_row() for sentence in self.listed]

    def to_dict(self) -> dict:
        return {
            "records": self.records,
            "unparseable": self.unparseable,
            **self.clue.to_dict(),
            "in_text": {"not_in_text": self.not_in_text, **self.clue_in_text.to_dict()},
            "seqeval": self.spans.to_dict(),
            "confusion": self.confusion.to_dict(),
            "sentences_with_errors": self.sentences_with_errors,
            "errors_listed": len(self.listed),
            "errors": self.errors(),
            **({"confidence": self.confidence} if self.confidence else {}),
            **(
                {"min_confidence": self.min_confidence, "below_min_confidence": self.below_min_confidence}
                if self.min_confidence is not None
                else {}
            ),
        }

    def format(self) -> str:
        """The table of the tutorials and a summary, for the terminal."""
        micro, in_text = self.spans.micro, self.clue_in_text.micro
        return "\n".join(
            [
                format_table(self.clue),
                "",
                f"records: {self.records}, unparseable: {self.unparseable}",
                f"entities not in their sentence: {self.not_in_text}; without them: micro F1 {in_text.f1:.4f} "
                f"(precision {in_text.precision:.4f}, recall {in_text.recall:.4f}), macro F1 {self.clue_in_text.macro_f1:.4f}",
                f"span F1 (seqeval, micro): {micro['f1']:.4f} (precision {micro['precision']:.4f}, recall {micro['recall']:.4f})",
                f"predicted strings left out of span scoring: {self.spans.not_in_text} not in their sentence, "
                f"{self.spans.overlapping} overlapping a longer one",
                *self._confidence_lines(),
            ]
        )

    def _confidence_lines(self) -> list[str]:
        lines = []
        if self.min_confidence is not None:
            lines.append(
                f"--min-confidence {self.min_confidence}: {self.below_min_confidence} entities below it not scored"
            )
        found = self.confidence
        if found:
            high, best = found["high_confidence"], found["best"]
            sure = f"precision {high['precision']:.4f} ({high['entities']} entities)" if high["entities"] else "none"
            lines.append(
                f"confidence: entities >= {high['threshold']}: {sure}, "
                f"all: {found['all_precision']:.4f} ({found['entities'] + found['unknown']}); best threshold "
                f"{best['threshold']:.2f} (F1 {best['f1']:.4f}); calibration error (ECE) {found['ece']:.4f}"
            )
        return lines


class Evaluator:
    """Scores answers one sentence at a time: memory stays flat however many there are.

    `add(record, answer)` parses the answer and adds the sentence to every score (CLUE's as
    answered and without entities not in their sentence, seqeval's spans, the confusion table);
    a sentence with a mistake goes to `on_error` (its errors.jsonl row) and, for the first
    `listed` (default `ERRORS_LISTED`), into the report. `report()` gives the scores so far."""

    def __init__(
        self,
        labels: Sequence[str] | None = None,
        *,
        on_error: Callable[[dict], None] | None = None,
        listed: int | None = None,
        min_confidence: float | None = None,
    ):
        self.labels, self.on_error = labels, on_error
        self.min_confidence = min_confidence
        self.confidence = ConfidenceTally()
        self.below_min_confidence = 0
        self.limit = ERRORS_LISTED if listed is None else listed
        self.clue, self.clue_in_text, self.spans = ClueTally(), ClueTally(), SpanTally()
        self.confusion = Confusion()
        self.mistakes: Counter = Counter()
        self.records = self.unparseable = self.not_in_text = self.sentences_with_errors = 0
        self.listed: list[ScoredSentence] = []

    def add(
        self, record: CluenerRecord, answer: str, confidences: dict[Mention, float | None] | None = None
    ) -> ScoredSentence:
        """Score one answer; `confidences` (a prediction row's, `row_confidences`) feed the
        confidence tables, and `min_confidence` leaves the entities below it unscored."""
        parsed = parse_output(answer)
        predicted = parsed or []
        gold = record.mentions()
        if confidences is not None:
            in_text = split_in_text(predicted, record.text)[0]
            self.confidence.add(gold, {mention: confidences.get(mention) for mention in dict.fromkeys(in_text)})
            if self.min_confidence is not None:
                sure = [m for m in predicted if confidences.get(m) is None or confidences[m] >= self.min_confidence]
                self.below_min_confidence += len(set(predicted) - set(sure))
                predicted = sure
        kept, dropped = split_in_text(predicted, record.text)
        diff = self.clue.add(gold, predicted)
        self.clue_in_text.add(gold, kept)
        self.spans.add(record, predicted)
        mistakes = classify_sentence(record, predicted)
        self.confusion.add(mistakes)
        self.mistakes.update(mistake.kind for mistake in mistakes.mistakes)
        sentence = ScoredSentence(self.records, record, answer, parsed, diff, mistakes, confidences)
        self.records += 1
        self.unparseable += parsed is None
        self.not_in_text += len(dropped)
        if sentence.wrong:
            self.sentences_with_errors += 1
            if self.on_error is not None:
                self.on_error(sentence.error_row())
            if len(self.listed) < self.limit:
                self.listed.append(sentence)
        return sentence

    def report(self) -> EvalReport:
        labels = self.labels
        return EvalReport(
            records=self.records,
            unparseable=self.unparseable,
            clue=self.clue.scores(labels),
            spans=self.spans.scores(labels),
            clue_in_text=self.clue_in_text.scores(labels),
            not_in_text=self.not_in_text,
            confusion=self.confusion,
            mistakes=self.mistakes,
            sentences_with_errors=self.sentences_with_errors,
            listed=self.listed,
            confidence=self.confidence.report(),
            min_confidence=self.min_confidence,
            below_min_confidence=self.below_min_confidence,
        )


def evaluate(
    gold: Sequence[CluenerRecord], predictions: Sequence[str], labels: Sequence[str] | None = None
) -> EvalReport:
    """Parse every answer and score it against its gold record; every wrong sentence is listed.

    `labels` are the dataset's labels (the run's, `nerft eval --labels`; default: those gold
    annotates): the per-label table and macro cover them, other predicted labels are counted apart."""
    if len(gold) != len(predictions):
        raise DataError(f"{len(predictions)} predictions for {len(gold)} gold records")
    evaluator = Evaluator(labels, listed=len(gold))
    for record, answer in zip(gold, predictions):
        evaluator.add(record, answer)
    return evaluator.report()


def iter_predictions(path: str | os.PathLike) -> Iterator[str]:
    """The raw answers of a JSON Lines file, each line an object with the answer in "predict",
    read one line at a time.

    Other fields ("prompt", "label", ...) are ignored; blank lines are skipped.
    """
    for line in iter_prediction_rows(path):
        yield line.answer


class PredictionLine(NamedTuple):
    lineno: int
    answer: str
    confidences: dict[Mention, float | None] | None
    text: str | None  # the sentence, where the row carries it (`nerft predict`'s rows do)
    source: str  # the file of the line: the predictions file, or one shard of a folder of them


def _clip(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def iter_prediction_rows(path: str | os.PathLike) -> Iterator[PredictionLine]:
    """The answer of each line, with its entity confidences (those of `nerft predict`'s rows,
    `nerft.metrics.confidence.row_confidences`; None for a file of answers only) and, where the row
    carries it, the sentence it answers. A folder is the shards `nerft predict --shard-rows` wrote,
    read in order as one file."""
    if not Path(path).is_dir():
        yield from _file_prediction_rows(path)
        return
    from nerft.inference.predictions import shard_files

    shards = shard_files(path)
    if not shards:
        raise DataError(f"{path}: a folder without shards (part-00000.jsonl, ...) of predictions")
    for shard in shards:
        yield from _file_prediction_rows(shard)


def _file_prediction_rows(path: str | os.PathLike) -> Iterator[PredictionLine]:
    with open_text(path) as handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = json_line(line, str(path), lineno, expect=object)
                if not isinstance(row, dict) or "predict" not in row:
                    raise DataError(f'{path}:{lineno}: expected an object with the model\'s answer in "predict"')
                if not isinstance(row["predict"], str):
                    raise DataError(
                        f'{path}:{lineno}: "predict" must be a string, found {type(row["predict"]).__name__}'
                    )
                text = row.get("text")
                yield PredictionLine(
                    lineno, row["predict"], row_confidences(row), text if isinstance(text, str) else None, str(path)
                )
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def score_prediction_files(
    *,
    gold: str | os.PathLike,
    predictions: str | os.PathLike,
    labels: Sequence[str] | None = None,
    on_error: Callable[[dict], None] | None = None,
    min_confidence: float | None = None,
) -> EvalReport:
    """Score a predictions file against gold records (any shape `nerft prepare` reads), reading
    both as streams: a first pass checks every gold record and counts the answers, so a bad line
    or a count that differs is reported before anything is scored."""
    records = stream_gold(gold)
    found = sum(1 for _ in iter_prediction_rows(predictions))
    if found != len(records):
        raise DataError(
            f"{predictions} has {found} predictions but the gold file has {len(records)} records; "
            "they must be the same records in the same order"
        )
    evaluator = Evaluator(labels, on_error=on_error, min_confidence=min_confidence)
    for record, line in zip(records, iter_prediction_rows(predictions)):
        if line.text is not None and line.text != record.text:
            gold_line = f":{record.line}" if record.line else ""
            raise DataError(
                f"{line.source}:{line.lineno}: predicts {_clip(line.text)!r}, not the gold sentence "
                f"{_clip(record.text)!r} ({record.source or gold}{gold_line})",
                hint="the predictions must be of the gold records, in the same order",
            )
        evaluator.add(record, line.answer, line.confidences)
    return evaluator.report()


def stream_gold(path: str | os.PathLike) -> RecordStream:
    """Gold records for scoring, checked and then streamed (`nerft.data.load.stream_records`);
    refuses a file with no labels at all (a test split)."""
    records = stream_records(path)
    if not records.labelled:
        raise DataError(
            f"{Path(path)}: no record has a 'label'; gold data for scoring needs labels (is it a test split?)"
        )
    return records
