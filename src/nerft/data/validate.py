"""Turn decoded input into `CluenerRecord`s and say what is wrong with each.

Errors (the record cannot be trusted; by default nothing is written):
- broken JSON, a top-level value that is not an object (a file that is not UTF-8 stops reading
  at once with one error naming the line);
- `text` missing, not a string, or empty / only whitespace;
- `label` not of the shape `{type: {entity: [[start, end], ...]}}`;
- a span outside the text, with start > end, or where `text[start:end+1] != entity`;
- a label name that is not one word of letters, digits, `_` or `-` (the compact prompt format
  writes `label:entity` lines, which such a name would break);
- a label not in `--labels`, when that option is given;
- two spans that cross (overlap without one containing the other).

Warnings (written as they are, reported in the summary):
- an entity with leading or trailing whitespace;
- nested spans, or the same span under two labels (CLUENER train has one such record, line
  1507: a book title holding two companies);
  span-level (BIO) scoring keeps only the outer span of a nest;
- a record without `label` in a file that otherwise has labels (it is treated as unlabelled).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from nerft.data.records import CluenerRecord, Entity, Finding

_LABEL_NAME = re.compile(r"[\w-]+")


@dataclass
class CheckedRecord:
    """A record (None when it could not be built) and every finding about it."""

    record: CluenerRecord | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return self.record is not None and not self.errors


def check_json_record(value: dict, source: str, line: int, labels: Iterable[str] | None = None) -> CheckedRecord:
    """Validate one CLUE NER JSON object."""
    findings: list[Finding] = []

    def error(reason: str) -> CheckedRecord:
        findings.append(Finding("error", source, line, reason))
        return CheckedRecord(None, findings)

    text = value.get("text")
    if "text" not in value:
        return error("no 'text' field")
    if not isinstance(text, str):
        return error(f"'text' must be a string, found {type(text).__name__}")
    if not text.strip():
        return error("empty text")
    if (position := lone_surrogate(text)) is not None:
        return error(
            f"'text' holds a lone surrogate (\\u{ord(text[position]):04x} at character {position}), not Unicode text"
        )
    if "id" in value and lone_surrogate(json.dumps(value["id"], ensure_ascii=False)) is not None:
        return error("'id' holds a lone surrogate, not Unicode text")
    raw_label = value.get("label")
    labelled = "label" in value and raw_label is not None
    entities: list[Entity] = []
    if labelled:
        if not isinstance(raw_label, dict):
            return error(
                f"'label' must be an object {{type: {{entity: [[start, end]]}}}}, found {type(raw_label).__name__}"
            )
        for label, mentions in raw_label.items():
            if not isinstance(mentions, dict):
                findings.append(
                    Finding("error", source, line, f"label {label!r}: expected {{entity: [[start, end], ...]}}")
                )
                continue
            for entity_text, spans in mentions.items():
                entities.extend(_check_spans(text, label, entity_text, spans, source, line, findings))
    record = CluenerRecord(
        text=text, entities=sorted(entities), id=value.get("id"), labelled=labelled, source=source, line=line
    )
    findings.extend(check_entities(record, labels))
    return CheckedRecord(record, findings)


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone surrogate in `text` (a JSON escape such as "\\ud800", or a
    byte that was not UTF-8 read with surrogateescape), which no UTF-8 file can hold; else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_tagged_record(value: dict, source: str, line: int, labels: Iterable[str] | None = None) -> CheckedRecord:
    """Validate one sentence read from a BIO/BMES file (its spans are consistent by construction)."""
    text = value["text"]
    if not text.strip():
        return CheckedRecord(None, [Finding("error", source, line, "empty text")])
    record = CluenerRecord(text=text, entities=sorted(value["entities"]), source=source, line=line)
    return CheckedRecord(record, check_entities(record, labels))


def _check_spans(text, label, entity_text, spans, source, line, findings) -> Iterator[Entity]:
    where = f"{label} {entity_text!r}"
    if not isinstance(spans, list) or not spans:
        findings.append(Finding("error", source, line, f"{where}: spans must be a non-empty list of [start, end]"))
        return
    if all(type(x) is int for x in spans):  # [0, 1] for [[0, 1]]: one error, not one per number
        findings.append(
            Finding("error", source, line, f"{where}: spans must be a list of [start, end] pairs, found {spans!r}")
        )
        return
    for span in spans:
        if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)):
            findings.append(Finding("error", source, line, f"{where}: span {span!r} is not [start, end]"))
            continue
        start, end = span
        if start > end:
            findings.append(Finding("error", source, line, f"{where}: span [{start}, {end}] starts after it ends"))
            continue
        if start < 0 or end >= len(text):
            findings.append(
                Finding(
                    "error", source, line, f"{where}: span [{start}, {end}] is outside the text (length {len(text)})"
                )
            )
            continue
        found = text[start : end + 1]
        if found != entity_text:
            findings.append(Finding("error", source, line, f"{where}: span [{start}, {end}] covers {found!r}"))
            continue
        yield Entity(start, end, label, entity_text)


def check_entities(record: CluenerRecord, labels: Iterable[str] | None = None) -> list[Finding]:
    """Checks on the entity list that apply to every input shape."""
    findings: list[Finding] = []
    allowed = set(labels) if labels else None

    def add(severity, reason):
        findings.append(Finding(severity, record.source, record.line, reason))

    for label in dict.fromkeys(entity.label for entity in record.entities):
        if not _LABEL_NAME.fullmatch(label):
            add("error", f"label name {label!r} must be one word of letters, digits, '_' or '-'")
    for entity in record.entities:
        if allowed is not None and entity.label not in allowed:
            add("error", f"unknown label {entity.label!r} (allowed: {', '.join(sorted(allowed))})")
        if entity.text != entity.text.strip():
            add("warning", f"{entity.label} {entity.text!r}: entity has leading or trailing whitespace")
    # Entities are sorted by (start, end): compare each with the furthest-reaching one before it.
    reach: Entity | None = None
    for entity in record.entities:
        if reach is not None and entity.start <= reach.end:
            pair = f"{reach.label} {reach.text!r} [{reach.start}, {reach.end}] and {entity.label} {entity.text!r} [{entity.start}, {entity.end}]"
            if entity.end <= reach.end or (entity.start == reach.start):
                add("warning", f"nested spans: {pair}")
            else:
                add("error", f"overlapping spans: {pair}")
        if reach is None or entity.end > reach.end:
            reach = entity
    return findings
