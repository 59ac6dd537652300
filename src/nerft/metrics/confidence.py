"""What a prediction's confidence buys: scores by confidence threshold, and calibration.

Each predicted entity with a confidence (`nerft.inference.grounding`) is counted in one of 100
bins of width 0.01 as right (its (label, text) pair is gold's) or wrong, under CLUE's set scoring
per sentence; the gold entities are counted once. Memory stays flat in the number of sentences.

- By threshold: precision, recall and F1 of the entities whose confidence is at least t, recall
  over every gold entity, so dropping an uncertain right answer costs recall. The threshold with
  the best F1 is searched over every bin edge (0.00 to 0.99).
- Calibration: for ten bins of confidence, the entities, their mean confidence and their precision
  (the fraction that is right); a calibrated model's precision equals its confidence, and the
  expected calibration error (ECE) is the mean gap weighted by entities.

Entities without a confidence (an engine that reports no log-probabilities) are counted apart
(`unknown`) and stay in every threshold's counts: a threshold cannot judge them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nerft.metrics.parse import Mention

FINE_BINS = 100
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CALIBRATION_BINS = 10
HIGH_CONFIDENCE = 0.9


def _bin(confidence: float) -> int:
    return min(max(int(confidence * FINE_BINS + 1e-9), 0), FINE_BINS - 1)


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@dataclass
class ConfidenceTally:
    right: list[int] = field(default_factory=lambda: [0] * FINE_BINS)
    wrong: list[int] = field(default_factory=lambda: [0] * FINE_BINS)
    confidence_sum: list[float] = field(default_factory=lambda: [0.0] * FINE_BINS)
    gold: int = 0
    unknown_right: int = 0
    unknown_wrong: int = 0

    def add(self, gold: Iterable[Mention], predicted: Mapping[Mention, float | None]) -> None:
        """One sentence: its gold pairs and its distinct predicted pairs with their confidences."""
        gold = set(gold)
        self.gold += len(gold)
        for mention, confidence in predicted.items():
            right = mention in gold
            if confidence is None:
                self.unknown_right += right
                self.unknown_wrong += not right
                continue
            index = _bin(confidence)
            (self.right if right else self.wrong)[index] += 1
            self.confidence_sum[index] += confidence

    @property
    def known(self) -> int:
        return sum(self.right) + sum(self.wrong)

    def at(self, threshold: float) -> dict:
        """Precision, recall and F1 of the entities with confidence >= `threshold` (and the unknown)."""
        start = math.ceil(threshold * FINE_BINS - 1e-9)  # bins hold [k/100, (k+1)/100)
        right = sum(self.right[start:]) + self.unknown_right
        kept = right + sum(self.wrong[start:]) + self.unknown_wrong
        precision = right / kept if kept else 0.0
        recall = right / self.gold if self.gold else 0.0
        return {
            "threshold": threshold,
            "entities": kept,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(_f1(precision, recall), 4),
        }

    def calibration(self) -> list[dict]:
        width = FINE_BINS // CALIBRATION_BINS
        rows = []
        for index in range(CALIBRATION_BINS):
            part = slice(index * width, (index + 1) * width)
            right, wrong = sum(self.right[part]), sum(self.wrong[part])
            count = right + wrong
            rows.append(
                {
                    "bin": f"{index / CALIBRATION_BINS:.1f}-{(index + 1) / CALIBRATION_BINS:.1f}",
                    "entities": count,
                    "mean_confidence": round(sum(self.confidence_sum[part]) / count, 4) if count else None,
                    "precision": round(right / count, 4) if count else None,
                }
            )
        return rows

    def report(self) -> dict | None:
        """The "confidence" section of report.json; None when no entity had a confidence."""
        if not self.known:
            return None
        calibration = self.calibration()
        ece = sum(
            row["entities"] * abs(row["precision"] - row["mean_confidence"]) for row in calibration if row["entities"]
        ) / max(self.known, 1)
        candidates = [self.at(index / FINE_BINS) for index in range(FINE_BINS)]
        best = max(candidates, key=lambda row: (row["f1"], -row["threshold"]))
        high = self.at(HIGH_CONFIDENCE)
        return {
            "entities": self.known,
            "unknown": self.unknown_right + self.unknown_wrong,
            "gold": self.gold,
            "thresholds": [self.at(threshold) for threshold in THRESHOLDS],
            "best": best,
            "high_confidence": {
                "threshold": HIGH_CONFIDENCE,
                "precision": high["precision"],
                "entities": high["entities"],
            },
            "all_precision": self.at(0.0)["precision"],
            "calibration": calibration,
            "ece": round(ece, 4),
            "curve": [[row["threshold"], row["precision"], row["recall"], row["f1"]] for row in candidates],
        }


def row_confidences(row: Mapping) -> dict[Mention, float | None] | None:
    """The (label, text) -> confidence of a prediction row's entities (`nerft predict`'s rows);
    None when the row has no entities list of that shape (an answer-only file)."""
    entities = row.get("entities")
    if not isinstance(entities, list):
        return None
    found: dict[Mention, float | None] = {}
    for entity in entities:
        if (
            not isinstance(entity, dict)
            or not isinstance(entity.get("label"), str)
            or not isinstance(entity.get("text"), str)
        ):
            return None
        confidence = entity.get("confidence")
        valid = isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0.0 <= confidence <= 1.0
        found.setdefault((entity["label"], entity["text"]), float(confidence) if valid else None)
    return found
