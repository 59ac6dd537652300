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
outer one is kept (counted as `gold_nested_dropped`). The tags are scored by
`seqeval.metrics.classification_report` in its default mode (conlleval's) with IOB2 tags:
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


def score_spans(
    gold: Sequence[CluenerRecord], predicted: Sequence[Sequence[Mention]], labels: Iterable[str] | None = None
) -> SpanScores:
    """seqeval's span scores of predicted mentions grounded in each gold sentence."""
    from seqeval.metrics import classification_report

    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    y_true, y_pred = [], []
    not_in_text = overlapping = nested = 0
    span_labels: Counter = Counter()  # predicted spans per label
    for record, mentions in zip(gold, predicted):
        spans, dropped = gold_spans(record)
        nested += dropped
        grounding = ground_mentions(record, mentions)
        not_in_text += len(grounding.not_in_text)
        overlapping += len(grounding.overlapping)
        span_labels.update(label for _, _, label in grounding.spans)
        y_true.append(bio_tags(len(record.text), spans))
        y_pred.append(bio_tags(len(record.text), grounding.spans))
    counts = dict(not_in_text=not_in_text, overlapping=overlapping, gold_nested_dropped=nested)
    schema = set(labels or ()) | {entity.label for record in gold for entity in record.entities}
    if not any(tag != "O" for tags in (*y_true, *y_pred) for tag in tags):
        empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return SpanScores({}, dict(empty), dict(empty), **counts)
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    rows = {name: _plain(row) for name, row in sorted(report.items()) if not name.endswith(" avg")}
    ours = {name: row for name, row in rows.items() if name in schema}
    others = {label: count for label, count in sorted(span_labels.items()) if label not in schema}
    macro = {
        key: sum(row[key] for row in ours.values()) / len(ours) if ours else 0.0
        for key in ("precision", "recall", "f1")
    }
    macro["support"] = sum(row["support"] for row in ours.values())
    return SpanScores(ours, _plain(report["micro avg"]), macro, **counts, other_labels=others)


def _plain(row: dict) -> dict:
    """seqeval's numpy numbers as JSON-ready floats and ints."""
    return {
        "precision": float(row["precision"]),
        "recall": float(row["recall"]),
        "f1": float(row["f1-score"]),
        "support": int(row["support"]),
    }
