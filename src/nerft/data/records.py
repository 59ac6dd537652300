"""The in-memory shape of one CLUE NER sentence and the problems found in input data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, order=True)
class Entity:
    """One labelled span. `end` is inclusive, as in CLUENER: `text[start:end + 1]`."""

    start: int
    end: int
    label: str
    text: str


@dataclass
class CluenerRecord:
    """A sentence and its entities, sorted by position (first occurrence first)."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    id: object = None
    labelled: bool = True
    source: str = ""
    line: int = 0

    def mentions(self) -> list[tuple[str, str]]:
        """(label, entity text) pairs in order of first occurrence, each pair once."""
        seen: dict[tuple[str, str], None] = {}
        for entity in self.entities:
            seen.setdefault((entity.label, entity.text), None)
        return list(seen)

    def to_clue(self) -> dict:
        """The CLUENER JSON shape: {"text", "label": {type: {entity: [[start, end], ...]}}}."""
        label: dict[str, dict[str, list[list[int]]]] = {}
        for entity in self.entities:
            label.setdefault(entity.label, {}).setdefault(entity.text, []).append([entity.start, entity.end])
        row: dict = {} if self.id is None else {"id": self.id}
        row["text"] = self.text
        if self.labelled:
            row["label"] = label
        return row


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """A problem in input data, located by file and line (or record number for tagged files)."""

    severity: Severity
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.severity}: {self.reason}"
