"""What kind of mistake each wrong entity is, and the label confusion table they add up to.

Per sentence, on CLUE's distinct (label, entity) pairs (so the counts add up to the CLUE table's
TP, FP and FN), every pair that is not a true positive is explained once, in this order:

1. wrong label: a missed gold pair and a spurious predicted pair with the SAME text
   (gold `company:京东`, predicted `organization:京东`);
2. wrong boundary: a missed gold pair and a spurious predicted pair whose text overlaps one of the
   gold pair's annotated spans somewhere in the sentence (gold `name:叶老桂`, predicted `name:老桂`
   or `name:叶老桂博士`); a candidate of the gold pair's own label is taken first;
3. missed: a gold pair left over;
4. spurious: a predicted pair left over (an invented entity, or one not in the sentence).

Pairs are matched one to one, gold pairs in order of first occurrence, predicted pairs in answer
order.

The confusion table has a row per gold label and a column per predicted label: the diagonal holds
the true positives, the other cells the wrong labels; then a `wrong boundary` column (by gold
label; which label was predicted is in `boundary` of the JSON) and a `missed` column, and a
`spurious` row (by predicted label). Each gold pair is counted once in its row, so a row adds up to
the label's support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nerft.data.records import CluenerRecord
from nerft.metrics.parse import Mention
from nerft.metrics.spans import occurrences

MISSED, SPURIOUS, WRONG_LABEL, WRONG_BOUNDARY = "missed", "spurious", "wrong label", "wrong boundary"
KINDS = (MISSED, SPURIOUS, WRONG_LABEL, WRONG_BOUNDARY)


@dataclass(frozen=True)
class Mistake:
    kind: str
    gold: Mention | None = None  # None for spurious
    predicted: Mention | None = None  # None for missed

    def labels(self) -> list[str]:
        return list(dict.fromkeys(pair[0] for pair in (self.gold, self.predicted) if pair is not None))

    def describe(self) -> str:
        """`gold → predicted`, with `nothing` on the side that has no pair."""

        def side(pair: Mention | None) -> str:
            return f"{pair[0]}:{pair[1]}" if pair else "nothing"

        return f"{side(self.gold)} → {side(self.predicted)}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "gold": list(self.gold) if self.gold else None,
            "predicted": list(self.predicted) if self.predicted else None,
        }


@dataclass
class SentenceMistakes:
    correct: list[Mention] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)


def classify_sentence(record: CluenerRecord, mentions: Sequence[Mention]) -> SentenceMistakes:
    """The true positives of one sentence and a `Mistake` for every other pair (module docstring)."""
    gold = record.mentions()
    predicted = list(dict.fromkeys(mentions))
    result = SentenceMistakes(correct=[pair for pair in predicted if pair in gold])
    missed = [pair for pair in gold if pair not in predicted]
    spurious = [pair for pair in predicted if pair not in gold]

    def match(kind: str, fits) -> None:
        for gold_pair in list(missed):
            candidates = sorted(
                (pair for pair in spurious if fits(gold_pair, pair)), key=lambda pair: pair[0] != gold_pair[0]
            )
            if candidates:
                missed.remove(gold_pair)
                spurious.remove(candidates[0])
                result.mistakes.append(Mistake(kind, gold_pair, candidates[0]))

    spans = {}
    for entity in record.entities:
        spans.setdefault((entity.label, entity.text), []).append((entity.start, entity.end + 1))

    def overlaps(gold_pair: Mention, pair: Mention) -> bool:
        length = len(pair[1])
        return any(
            start < stop and begin < start + length
            for start in occurrences(record.text, pair[1])
            for begin, stop in spans.get(gold_pair, [])
        )

    match(WRONG_LABEL, lambda gold_pair, pair: gold_pair[1] == pair[1])
    match(WRONG_BOUNDARY, overlaps)
    result.mistakes += [Mistake(MISSED, gold=pair) for pair in missed]
    result.mistakes += [Mistake(SPURIOUS, predicted=pair) for pair in spurious]
    return result


@dataclass
class Confusion:
    """Counts of (gold label, predicted label) over a data set; see the module docstring."""

    matrix: dict[str, dict[str, int]] = field(default_factory=dict)  # gold -> predicted -> same text
    boundary: dict[str, dict[str, int]] = field(default_factory=dict)  # gold -> predicted -> overlapping text
    missed: dict[str, int] = field(default_factory=dict)
    spurious: dict[str, int] = field(default_factory=dict)

    def add(self, sentence: SentenceMistakes) -> None:
        for label, _ in sentence.correct:
            _bump(self.matrix, label, label)
        for mistake in sentence.mistakes:
            if mistake.kind == WRONG_LABEL:
                _bump(self.matrix, mistake.gold[0], mistake.predicted[0])
            elif mistake.kind == WRONG_BOUNDARY:
                _bump(self.boundary, mistake.gold[0], mistake.predicted[0])
            elif mistake.kind == MISSED:
                self.missed[mistake.gold[0]] = self.missed.get(mistake.gold[0], 0) + 1
            else:
                self.spurious[mistake.predicted[0]] = self.spurious.get(mistake.predicted[0], 0) + 1

    @property
    def gold_labels(self) -> list[str]:
        return sorted({*self.matrix, *self.boundary, *self.missed})

    @property
    def predicted_labels(self) -> list[str]:
        return sorted(
            {
                *(p for row in self.matrix.values() for p in row),
                *self.spurious,
                *(p for row in self.boundary.values() for p in row),
            }
        )

    def table(self) -> tuple[list[str], list[str], list[list[int | None]]]:
        """(row names, column names, counts): gold labels + `spurious` by predicted labels +
        `wrong boundary` + `missed`; None where a cell cannot hold anything."""
        columns = [*self.predicted_labels, WRONG_BOUNDARY, MISSED]
        rows = []
        for gold in self.gold_labels:
            rows.append(
                [
                    *(self.matrix.get(gold, {}).get(p, 0) for p in self.predicted_labels),
                    sum(self.boundary.get(gold, {}).values()),
                    self.missed.get(gold, 0),
                ]
            )
        rows.append([*(self.spurious.get(p, 0) for p in self.predicted_labels), None, None])
        return [*self.gold_labels, SPURIOUS], columns, rows

    def to_dict(self) -> dict:
        return {
            "matrix": _sorted(self.matrix),
            "boundary": _sorted(self.boundary),
            "missed": dict(sorted(self.missed.items())),
            "spurious": dict(sorted(self.spurious.items())),
        }


def confusion(
    gold: Sequence[CluenerRecord], predicted: Sequence[Sequence[Mention]]
) -> tuple[Confusion, list[SentenceMistakes]]:
    """The confusion counts of a data set and the classified mistakes of each sentence."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    total = Confusion()
    sentences = [classify_sentence(record, mentions) for record, mentions in zip(gold, predicted)]
    for sentence in sentences:
        total.add(sentence)
    return total, sentences


def _bump(table: dict[str, dict[str, int]], gold: str, predicted: str) -> None:
    row = table.setdefault(gold, {})
    row[predicted] = row.get(predicted, 0) + 1


def _sorted(table: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {gold: dict(sorted(row.items())) for gold, row in sorted(table.items())}
