"""Span-level scoring with seqeval: character-level BIO tags for gold and for predictions.

A model answers with entity strings, not offsets, so each predicted string is first grounded to
character offsets in its sentence:

1. Each distinct (label, entity) pair is grounded once, longest entity first (ties in the order
   written), so "北京大学" claims its characters before "北京" is looked for.
2. A pair that gold annotates, same label and same string, takes the annotated spans: the model
   cannot say which occurrence it means, and naming the pair is how it names all of them.
3. Any other pair takes the first occurrence, left to right, that overlaps no character already
   taken.
4. A string that is not in the sentence is dropped and counted (`not_in_text`); a string whose
   occurrences all overlap characters already taken is dropped and counted (`overlapping`).
   Dropped strings are not false positives here (BIO tags cannot hold them); CLUE's set scoring
   counts them.

Gold tags come from the annotated spans. BIO cannot hold a nest, so of nested gold spans only the
outer one is kept (counted as `gold_nested_dropped`). The IOB2 tags are scored as
`seqeval.metrics.classification_report` scores them in its default mode (conlleval's), summed
sentence by sentence (`SpanTally`, so any size fits in memory):
per label and micro over every predicted span; as in CLUE's scoring (`nerft.metrics.clue`), the
per-label rows and macro cover the dataset's labels (`labels=`, default: gold's), and spans under
other labels are counted apart (`other_labels`: label -> false positives).

Compared with CLUE's scoring, an entity counts once per annotated occurrence, and a prediction at
the wrong place of a repeated string or across another entity is wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nerft.data.records import CluenerRecord
from nerft.metrics.parse import Mention

Span = tuple[int, int, str]  # start, inclusive end, label


@dataclass
class Grounding:
    """Predicted spans of one sentence, and what could not be placed."""

    spans: list[Span] = field(default_factory=list)
    not_in_text: list[Mention] = field(default_factory=list)
    overlapping: list[Mention] = field(default_factory=list)


@dataclass
class SpanScores:
    labels: dict[str, dict]
    micro: dict
    macro: dict
    not_in_text: int
    overlapping: int
    gold_nested_dropped: int
    other_labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "labels": self.labels,
            "other_labels": self.other_labels,
            "micro": self.micro,
            "macro": self.macro,
            "dropped": {"not_in_text": self.not_in_text, "overlapping": self.overlapping},
            "gold_nested_dropped": self.gold_nested_dropped,
        }


def gold_spans(record: CluenerRecord) -> tuple[list[Span], int]:
    """The annotated spans BIO can hold (outer spans of nests), and how many were left out."""
    kept: list[Span] = []
    taken = [False] * len(record.text)
    dropped = 0
    for entity in sorted(record.entities, key=lambda e: (e.start, e.start - e.end)):
        if any(taken[entity.start : entity.end + 1]):
            dropped += 1
            continue
        taken[entity.start : entity.end + 1] = [True] * (entity.end - entity.start + 1)
        kept.append((entity.start, entity.end, entity.label))
    return kept, dropped


def ground_mentions(record: CluenerRecord, mentions: Sequence[Mention]) -> Grounding:
    """Place predicted (label, entity) pairs in the sentence by the rules of the module docstring."""
    text = record.text
    annotated: dict[Mention, list[tuple[int, int]]] = {}
    for entity in record.entities:
        annotated.setdefault((entity.label, entity.text), []).append((entity.start, entity.end))
    taken = [False] * len(text)
    result = Grounding()

    def free(start: int, end: int) -> bool:
        return not any(taken[start : end + 1])

    def take(start: int, end: int, label: str) -> None:
        taken[start : end + 1] = [True] * (end - start + 1)
        result.spans.append((start, end, label))

    for label, entity in sorted(dict.fromkeys(mentions), key=lambda m: -len(m[1])):
        if (label, entity) in annotated:
            candidates = annotated[(label, entity)]
            placed = [span for span in candidates if free(*span)]
            for start, end in placed:
                take(start, end, label)
            if not placed:
                result.overlapping.append((label, entity))
            continue
        starts = occurrences(text, entity)
        if not starts:
            result.not_in_text.append((label, entity))
            continue
        start = next((s for s in starts if free(s, s + len(entity) - 1)), None)
        if start is None:
            result.overlapping.append((label, entity))
        else:
            take(start, start + len(entity) - 1, label)
    result.spans.sort()
    return result


def occurrences(text: str, entity: str) -> list[int]:
    starts = []
    index = text.find(entity) if entity else -1
    while index >= 0:
        starts.append(index)
        index = text.find(entity, index + 1)
    return starts


def bio_tags(length: int, spans: Sequence[Span]) -> list[str]:
    tags = ["O"] * length
    for start, end, label in spans:
        tags[start] = f"B-{label}"
        for index in range(start + 1, end + 1):
            tags[index] = f"I-{label}"
    return tags


class SpanTally:
    """seqeval's entity counts summed one sentence at a time, so a data set of any size is
    scored in constant memory.

    Each sentence's gold and predicted BIO tags go through `seqeval.metrics.sequence_labeling
    .get_entities`, the chunking `classification_report` uses in its default mode; per label the
    true, predicted and matching chunks are summed, and the scores are seqeval's formulas over the
    sums (0 where a denominator is 0, as `zero_division=0`). A sentence's chunks cannot meet
    another's (seqeval itself separates sentences with an `O`), so the sums are what
    `classification_report` counts over the whole data set at once."""

    def __init__(self) -> None:
        from seqeval.metrics.sequence_labeling import get_entities  # numpy and scikit-learn: only when scoring

        self._chunks = get_entities
        self.true: Counter = Counter()
        self.predicted: Counter = Counter()
        self.matched: Counter = Counter()
        self.not_in_text = self.overlapping = self.gold_nested_dropped = 0
        self.gold_labels: set[str] = set()

    def add(self, record: CluenerRecord, mentions: Sequence[Mention]) -> Grounding:
        """Count one sentence; where its predicted strings were placed."""
        spans, dropped = gold_spans(record)
        self.gold_nested_dropped += dropped
        self.gold_labels.update(entity.label for entity in record.entities)
        grounding = ground_mentions(record, mentions)
        self.not_in_text += len(grounding.not_in_text)
        self.overlapping += len(grounding.overlapping)
        true = set(self._chunks(bio_tags(len(record.text), spans)))
        predicted = set(self._chunks(bio_tags(len(record.text), grounding.spans)))
        self.true.update(label for label, _, _ in true)
        self.predicted.update(label for label, _, _ in predicted)
        self.matched.update(label for label, _, _ in true & predicted)
        return grounding

    def scores(self, labels: Iterable[str] | None = None) -> SpanScores:
        """Per label (the dataset's: `labels` and gold's), micro over every predicted span, macro."""
        counts = dict(
            not_in_text=self.not_in_text, overlapping=self.overlapping, gold_nested_dropped=self.gold_nested_dropped
        )
        if not self.true and not self.predicted:
            empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
            return SpanScores({}, dict(empty), dict(empty), **counts)
        schema = set(labels or ()) | self.gold_labels
        rows = {
            label: _row(self.matched[label], self.predicted[label], self.true[label])
            for label in sorted(set(self.true) | set(self.predicted))
        }
        ours = {name: row for name, row in rows.items() if name in schema}
        others = {label: self.predicted[label] for label in sorted(self.predicted) if label not in schema}
        micro = _row(sum(self.matched.values()), sum(self.predicted.values()), sum(self.true.values()))
        macro = {
            key: sum(row[key] for row in ours.values()) / len(ours) if ours else 0.0
            for key in ("precision", "recall", "f1")
        }
        macro["support"] = sum(row["support"] for row in ours.values())
        return SpanScores(ours, micro, macro, **counts, other_labels=others)


def score_spans(
    gold: Sequence[CluenerRecord], predicted: Sequence[Sequence[Mention]], labels: Iterable[str] | None = None
) -> SpanScores:
    """seqeval's span scores of predicted mentions grounded in each gold sentence."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    tally = SpanTally()
    for record, mentions in zip(gold, predicted):
        tally.add(record, mentions)
    return tally.scores(labels)


def _row(matched: int, predicted: int, true: int) -> dict:
    """seqeval's precision, recall and F1 (beta 1, zero_division 0) of one label's chunk counts."""
    precision = matched / predicted if predicted else 0.0
    recall = matched / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": true}
