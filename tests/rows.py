"""Comparing prediction files: the same answers, and the same confidences to within float noise.

Two runs of one model give the same greedy answers, but not bit-for-bit the same log-probabilities
when their batches differ (padding changes the order of the float sums): a confidence can move in
its sixth decimal. Everything else in a row must be equal. Grounded vLLM reports log-probabilities
after its grammar's mask, hf before it (`nerft.inference.grounding`): their confidences differ.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_rows(actual: list[dict] | Path, expected: list[dict] | Path, tolerance: float | None = 1e-4) -> None:
    """Rows equal in everything but their confidences, which differ by at most `tolerance` (with
    None, are only both there or both missing: grounded vLLM's confidences are not hf's)."""
    actual = rows_of(actual) if isinstance(actual, Path) else actual
    expected = rows_of(expected) if isinstance(expected, Path) else expected
    assert [without_confidences(row) for row in actual] == [without_confidences(row) for row in expected]
    for got, want in zip(actual, expected):
        for a, b in zip(_confidences(got), _confidences(want)):
            assert (a is None) == (b is None), (got, want)
            assert a is None or tolerance is None or math.isclose(a, b, abs_tol=tolerance), (got["text"], a, b)


def without_confidences(value):
    """Rows (or a row) with every confidence None."""
    if isinstance(value, dict):
        return {key: None if key == "confidence" else without_confidences(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_confidences(item) for item in value]
    return value


def _confidences(value) -> list:
    if isinstance(value, dict):
        own = [value["confidence"]] if "confidence" in value else []
        return own + [found for key, item in value.items() if key != "confidence" for found in _confidences(item)]
    if isinstance(value, list):
        return [found for item in value for found in _confidences(item)]
    return []
