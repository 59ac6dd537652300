"""Score raw model answers against gold records: CLUE's set scores, seqeval's span scores, errors.

`evaluate(gold, predictions)` takes the raw answers (one string per gold record, same order);
it scores them twice: as answered (CLUE's official scoring: every predicted string counts), and
with the predicted entities that are not substrings of their sentence dropped, as `nerft predict`
does by default (`in_text` in the report: such an entity can never be a CLUE entity, so dropping
it only removes false positives).
`read_predictions(path, expected_count)` reads them from JSON Lines with the answer in "predict",
the shape of LLaMA-Factory's `generated_predictions.jsonl`; `score_prediction_files(...)` does
both from file paths and is what `nerft eval` runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nerft.data.load import load_records
from nerft.data.readers import open_text
from nerft.data.records import CluenerRecord
from nerft.errors import DataError
from nerft.io import json_line
from nerft.metrics.clue import ClueScores, format_table, score_clue, split_in_text
from nerft.metrics.parse import parse_output
from nerft.metrics.spans import SpanScores, score_spans


@dataclass
class EvalReport:
    gold: Sequence[CluenerRecord]
    predictions: Sequence[str]
    parsed: list[list[tuple[str, str]] | None]
    clue: ClueScores
    spans: SpanScores
    clue_in_text: ClueScores  # the same without predicted entities that are not in their sentence
    not_in_text: int  # how many were dropped for `clue_in_text` (distinct per sentence)

    @property
    def records(self) -> int:
        return len(self.gold)

    @property
    def unparseable(self) -> int:
        return sum(1 for mentions in self.parsed if mentions is None)

    def errors(self) -> list[dict]:
        """One row per sentence with a mistake: what was predicted wrongly, what was missed."""
        rows = []
        for index, (record, raw, mentions, diff) in enumerate(
            zip(self.gold, self.predictions, self.parsed, self.clue.sentences)
        ):
            if diff.correct and mentions is not None:
                continue
            rows.append(
                {
                    "index": index,
                    "line": record.line,
                    "text": record.text,
                    "predict": raw,
                    "unparseable": mentions is None,
                    "false_positives": [list(m) for m in diff.false_positives],
                    "false_negatives": [list(m) for m in diff.false_negatives],
                }
            )
        return rows

    def to_dict(self) -> dict:
        errors = self.errors()
        return {
            "records": self.records,
            "unparseable": self.unparseable,
            **self.clue.to_dict(),
            "in_text": {"not_in_text": self.not_in_text, **self.clue_in_text.to_dict()},
            "seqeval": self.spans.to_dict(),
            "sentences_with_errors": len(errors),
            "errors": errors,
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
            ]
        )


def evaluate(
    gold: Sequence[CluenerRecord], predictions: Sequence[str], labels: Sequence[str] | None = None
) -> EvalReport:
    """Parse every answer and score it against its gold record.

    `labels` are the dataset's labels (the run's, `nerft eval --labels`; default: those gold
    annotates): the per-label table and macro cover them, other predicted labels are counted apart."""
    if len(gold) != len(predictions):
        raise DataError(f"{len(predictions)} predictions for {len(gold)} gold records")
    parsed = [parse_output(raw) for raw in predictions]
    predicted = [mentions or [] for mentions in parsed]
    gold_mentions = [record.mentions() for record in gold]
    splits = [split_in_text(mentions, record.text) for record, mentions in zip(gold, predicted)]
    in_text = [kept for kept, _ in splits]
    not_in_text = sum(len(dropped) for _, dropped in splits)
    clue = score_clue(gold_mentions, predicted, labels)
    spans = score_spans(gold, predicted, labels)
    return EvalReport(gold, predictions, parsed, clue, spans, score_clue(gold_mentions, in_text, labels), not_in_text)


def read_predictions(path: str | os.PathLike, expected_count: int | None = None) -> list[str]:
    """The raw answers of a JSON Lines file, each line an object with the answer in "predict".

    Other fields ("prompt", "label", ...) are ignored; blank lines are skipped.
    """
    predictions: list[str] = []
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
                predictions.append(row["predict"])
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if expected_count is not None and len(predictions) != expected_count:
        raise DataError(
            f"{path} has {len(predictions)} predictions but the gold file has {expected_count} records; "
            "they must be the same records in the same order"
        )
    return predictions


def score_prediction_files(
    *, gold: str | os.PathLike, predictions: str | os.PathLike, labels: Sequence[str] | None = None
) -> EvalReport:
    """Load gold records (any shape `nerft prepare` reads) and a predictions file, and score them."""
    records = load_gold(gold)
    return evaluate(records, read_predictions(predictions, expected_count=len(records)), labels)


def load_gold(path: str | os.PathLike) -> list[CluenerRecord]:
    """Gold records for scoring: refuses a file with no labels at all (a test split)."""
    records = load_records(path)
    if not any(record.labelled for record in records):
        raise DataError(
            f"{Path(path)}: no record has a 'label'; gold data for scoring needs labels (is it a test split?)"
        )
    return records
