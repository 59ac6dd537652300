"""CLUE NER's official scoring: entity strings per sentence and label, compared as sets.

For every sentence and label, the gold and the predicted entity strings are each a SET, so an
entity named twice (or annotated at two positions) counts once. Summed over sentences per label:
TP = |gold ∩ predicted|, FP = |predicted - gold|, FN = |gold - predicted|.

- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R); each is 0.0 when its
  denominator is 0 (a label never predicted has precision 0, a label never in gold recall 0);
- support = TP + FN, the number of distinct gold entity strings of the label;
- micro: the same formulas over TP, FP and FN summed over EVERY predicted pair, so a pair under a
  label outside the dataset's labels (a model inventing "公司名") is a false positive;
- the per-label table and macro cover the dataset's labels (`labels=`: `nerft eval --labels`, the
  run's, else the labels the gold file annotates). Macro is the mean over those of them that occur
  in gold or in the predictions (a label nobody mentions has no score to average);
- predictions under any other label are counted apart (`other_labels`: label -> false positives),
  listed below the table and in report.json, and never enter the macro average.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nerft.metrics.parse import Mention


def split_in_text(mentions: Iterable[Mention], text: str) -> tuple[list[Mention], list[Mention]]:
    """The distinct mentions in written order, split into those whose entity is a substring of
    `text` and those that are not (which can never be a CLUE entity of that sentence)."""
    distinct = list(dict.fromkeys(mentions))
    return [m for m in distinct if m[1] in text], [m for m in distinct if m[1] not in text]


@dataclass
class LabelCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    def to_dict(self) -> dict:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


@dataclass
class SentenceDiff:
    """What one sentence got wrong, as (label, entity) pairs in the order they were written."""

    false_positives: list[Mention] = field(default_factory=list)
    false_negatives: list[Mention] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return not self.false_positives and not self.false_negatives


@dataclass
class ClueScores:
    labels: dict[str, LabelCounts]  # the dataset's labels, in the table and the macro average
    sentences: list[SentenceDiff]  # per sentence (`score_clue`; empty from a streaming `ClueTally`)
    other_labels: dict[str, LabelCounts] = field(default_factory=dict)  # predicted under any other label

    @property
    def micro(self) -> LabelCounts:
        total = LabelCounts()
        for counts in (*self.labels.values(), *self.other_labels.values()):
            total.tp, total.fp, total.fn = total.tp + counts.tp, total.fp + counts.fp, total.fn + counts.fn
        return total

    @property
    def _averaged(self) -> list[LabelCounts]:
        return [counts for counts in self.labels.values() if counts.tp or counts.fp or counts.fn]

    @property
    def macro_precision(self) -> float:
        return _mean(c.precision for c in self._averaged)

    @property
    def macro_recall(self) -> float:
        return _mean(c.recall for c in self._averaged)

    @property
    def macro_f1(self) -> float:
        return _mean(c.f1 for c in self._averaged)

    def to_dict(self) -> dict:
        micro = self.micro
        return {
            "labels": {label: counts.to_dict() for label, counts in self.labels.items()},
            "other_labels": {label: counts.fp for label, counts in self.other_labels.items()},
            "micro": {"precision": micro.precision, "recall": micro.recall, "f1": micro.f1, "support": micro.support},
            "macro": {"precision": self.macro_precision, "recall": self.macro_recall, "f1": self.macro_f1},
        }


class ClueTally:
    """CLUE's counts summed one sentence at a time, so a data set of any size is scored in
    constant memory; `score_clue` is the same over lists."""

    def __init__(self) -> None:
        self.counted: dict[str, LabelCounts] = {}
        self.gold_labels: set[str] = set()  # a gold label is a dataset label

    def add(self, gold_mentions: Iterable[Mention], predicted_mentions: Iterable[Mention]) -> SentenceDiff:
        """Count one sentence; what it got wrong."""
        gold_set = dict.fromkeys(gold_mentions)  # ordered sets
        predicted_set = dict.fromkeys(predicted_mentions)
        diff = SentenceDiff(
            false_positives=[m for m in predicted_set if m not in gold_set],
            false_negatives=[m for m in gold_set if m not in predicted_set],
        )
        self.gold_labels.update(label for label, _ in gold_set)
        for mention in predicted_set:
            counts = self.counted.setdefault(mention[0], LabelCounts())
            if mention in gold_set:
                counts.tp += 1
            else:
                counts.fp += 1
        for label, _ in diff.false_negatives:
            self.counted.setdefault(label, LabelCounts()).fn += 1
        return diff

    def scores(self, labels: Iterable[str] | None = None, sentences: list[SentenceDiff] | None = None) -> ClueScores:
        """The scores so far; `labels` are the dataset's (default: those gold annotates)."""
        schema = set(labels or ()) | self.gold_labels
        counted = {label: self.counted.get(label, LabelCounts()) for label in schema | set(self.counted)}
        ordered = sorted(counted.items())
        return ClueScores(
            {label: counts for label, counts in ordered if label in schema},
            sentences if sentences is not None else [],
            {label: counts for label, counts in ordered if label not in schema},
        )


def score_clue(
    gold: Sequence[Iterable[Mention]], predicted: Sequence[Iterable[Mention]], labels: Iterable[str] | None = None
) -> ClueScores:
    """Score predicted against gold mentions, sentence by sentence (both lists in the same order).

    `labels` are the dataset's labels (default: those gold annotates); see the module docstring."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    tally = ClueTally()
    sentences = [
        tally.add(gold_mentions, predicted_mentions) for gold_mentions, predicted_mentions in zip(gold, predicted)
    ]
    return tally.scores(labels, sentences)


def format_table(scores: ClueScores) -> str:
    """The per-label table of the tutorials, with a Support column."""
    micro = scores.micro
    rows = [["Label", "Precision", "Recall", "F1", "Support"]]
    for label, counts in scores.labels.items():
        rows.append([label, f"{counts.precision:.4f}", f"{counts.recall:.4f}", f"{counts.f1:.4f}", str(counts.support)])
    rows.append(["Micro Avg.", f"{micro.precision:.4f}", f"{micro.recall:.4f}", f"{micro.f1:.4f}", str(micro.support)])
    rows.append(
        [
            "Macro Avg.",
            f"{scores.macro_precision:.4f}",
            f"{scores.macro_recall:.4f}",
            f"{scores.macro_f1:.4f}",
            str(micro.support),
        ]
    )
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(_pad(cell, width) for cell, width in zip(row, widths)) for row in rows]
    if scores.other_labels:
        lines.append(format_other_labels({label: counts.fp for label, counts in scores.other_labels.items()}))
    return "\n".join(lines)


def format_other_labels(other_labels: dict[str, int]) -> str:
    """The line under the table naming the predicted labels outside the dataset's (counted in micro)."""
    listed = ", ".join(f"{label} ({count})" for label, count in other_labels.items())
    total = sum(other_labels.values())
    return f"Other labels (not the dataset's; {total} false positives in micro, not in macro): {listed}"


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _width(cell: str) -> int:
    # CJK labels (a model inventing "公司名") take two columns in a terminal.
    return sum(2 if "\u2e80" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef" else 1 for char in cell)


def _pad(cell: str, width: int) -> str:
    return " " * (width - _width(cell)) + cell
