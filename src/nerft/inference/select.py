"""`nerft select`: the unlabelled sentences worth labelling next, as Label Studio tasks.

The loop is one command a step: `nerft predict` (or `select` predicting itself) -> `nerft select`
-> correct the tasks in Label Studio -> `nerft prepare` on its export -> `nerft train` again.

A sentence's score is its answer's confidence (the row's `confidence`: the probability the model
gave its whole answer, `nerft.inference.grounding`), so a sentence where the model is unsure of
any entity, of where one ends, or of having none at all, ranks low. The N lowest are kept in a
heap while the predictions stream past (memory grows with N, not with the corpus), ties in input
order, and written least confident first, with their predictions as pre-annotations
(`nerft.data.convert.write_converted`: each region's `score`, the task's `score`).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from nerft.data.readers import iter_json_objects
from nerft.data.records import Finding
from nerft.errors import DataError


@dataclass
class LeastConfident:
    """The `n` rows with the lowest confidence seen so far; `add` is a prediction sink."""

    n: int
    seen: int = 0
    unknown: int = 0
    _heap: list = field(default_factory=list)  # (-confidence, -index, row): the most confident on top

    def add(self, row: dict) -> None:
        confidence = row.get("confidence")
        index = self.seen
        self.seen += 1
        if not isinstance(confidence, (int, float)) or isinstance(confidence, bool):
            self.unknown += 1
            return
        item = (-float(confidence), -index, row)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def rows(self) -> list[dict]:
        """The kept rows, least confident first (ties: the earlier sentence first)."""
        return [row for _, _, row in sorted(self._heap, key=lambda item: (-item[0], -item[1]))]


def rows_of_predictions(path: str | os.PathLike) -> Iterable[dict]:
    """The rows of a `nerft predict` file, one at a time."""
    for line, value in iter_json_objects(path):
        if isinstance(value, Finding):
            raise DataError(str(value))
        if not isinstance(value, dict) or not isinstance(value.get("text"), str) or "entities" not in value:
            raise DataError(f'{path}:{line}: expected a `nerft predict` row with "text" and "entities"')
        yield value


def check_confidences(chosen: LeastConfident, source: str) -> None:
    """A `DataError` when no row had a confidence: nothing to rank by."""
    if chosen.seen and chosen.unknown == chosen.seen:
        raise DataError(
            f"{source}: none of the {chosen.seen} predictions has a confidence",
            hint="predict with --engine hf or vllm, or an endpoint that returns logprobs (vLLM's server)",
        )


def describe(rows: list[dict]) -> str:
    """One line: how confident the chosen sentences are."""
    if not rows:
        return "no sentence chosen"
    values = [row["confidence"] for row in rows]
    return f"confidence {min(values):.3f} to {max(values):.3f}"
