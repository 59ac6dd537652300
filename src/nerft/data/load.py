"""One entry point for every input shape: `iter_checked(path)` and `load_records(path)`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from nerft.data.readers import detect_format, iter_json_objects, iter_tagged_sentences
from nerft.data.records import CluenerRecord, Finding
from nerft.data.validate import CheckedRecord, check_json_record, check_tagged_record
from nerft.errors import DataError


def iter_checked(path: str | os.PathLike, labels: Iterable[str] | None = None) -> Iterator[CheckedRecord]:
    """Every record of the file, validated, in file order; unreadable parts come as findings."""
    source = str(path)
    labels = list(labels) if labels else None
    if detect_format(path) == "json":
        items, check = iter_json_objects(path), check_json_record
    else:
        items, check = iter_tagged_sentences(path), check_tagged_record
    for line, value in items:
        if isinstance(value, Finding):
            yield CheckedRecord(None, [value])
        else:
            yield check(value, source, line, labels)


def load_records(path: str | os.PathLike, labels: Iterable[str] | None = None) -> list[CluenerRecord]:
    """All records of a file, or a `DataError` listing the first errors with file and line."""
    records: list[CluenerRecord] = []
    errors: list[Finding] = []
    for checked in iter_checked(path, labels):
        errors.extend(f for f in checked.findings if f.severity == "error")
        if checked.ok:
            records.append(checked.record)
    if errors:
        raise DataError(format_errors(errors))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def format_errors(errors: list[Finding], limit: int = 20) -> str:
    shown = [str(e) for e in errors[:limit]]
    if len(errors) > limit:
        shown.append(f"... and {len(errors) - limit} more errors")
    return "\n".join(shown)
