"""One entry point for every input shape: `iter_checked(path)` and `load_records(path)`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from nerft.data.annotation import check_any_record
from nerft.data.readers import detect_format, iter_json_objects, iter_tagged_sentences
from nerft.data.records import CluenerRecord, Finding
from nerft.data.validate import CheckedRecord, check_tagged_record
from nerft.errors import DataError

if TYPE_CHECKING:
    from nerft.prompts import PromptFormat


def iter_checked(
    path: str | os.PathLike, labels: Iterable[str] | None = None, fmt: PromptFormat | None = None
) -> Iterator[CheckedRecord]:
    """Every record of the file, validated, in file order; unreadable parts come as findings. With
    `fmt` (prepare's), entities its answer would not read back as are an error too."""
    source = str(path)
    labels = list(labels) if labels else None
    if detect_format(path) == "json":
        items, check = iter_json_objects(path), check_any_record  # CLUE, doccano or Label Studio
    else:
        items, check = iter_tagged_sentences(path), check_tagged_record
    # A record without 'label' in a file that has labels elsewhere is worth a warning; the lines of
    # unlabelled records seen before the first labelled one wait for it (line numbers only).
    waiting: list[int] = []
    seen_labelled = False
    for line, value in items:
        if isinstance(value, Finding):
            yield CheckedRecord(None, [value])
            continue
        checked = check(value, source, line, labels)
        record = checked.record
        if fmt is not None and checked.ok and record.labelled and (problem := fmt.unreadable(record.mentions())):
            checked.findings.append(Finding("error", source, line, problem))
        if record is not None and record.labelled and not seen_labelled:
            seen_labelled = True
            checked.findings[:0] = [_unlabelled(source, earlier) for earlier in waiting]
            waiting = []
        elif record is not None and not record.labelled:
            if seen_labelled:
                checked.findings.append(_unlabelled(source, line))
            else:
                waiting.append(line)
        yield checked


def _unlabelled(source: str, line: int) -> Finding:
    return Finding("warning", source, line, "no 'label' in a file whose other records have one: treated as unlabelled")


def load_records(path: str | os.PathLike, labels: Iterable[str] | None = None) -> list[CluenerRecord]:
    """All records of a file, or a `DataError` listing the first errors with file and line."""
    return collect_records(iter_checked(path, labels), empty=f"{path}: no records")


class RecordStream:
    """The valid records of a file, read again on each iteration, never all held at once.

    Built by `stream_records`, which has read the file once already to check every record: a bad
    line is reported before anything is predicted, and `len()` is known for progress and counts.
    """

    def __init__(self, path: str | os.PathLike, labels: Iterable[str] | None, count: int, labelled: int = 0):
        self.path, self.labels, self.count = path, list(labels) if labels else None, count
        self.labelled = labelled  # how many of the records have a 'label'

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[CluenerRecord]:
        for checked in iter_checked(self.path, self.labels):
            if checked.ok:
                yield checked.record


def stream_records(path: str | os.PathLike, labels: Iterable[str] | None = None) -> RecordStream:
    """`load_records` for a file of any size: one checking pass that keeps only the errors, then a
    stream of the records (memory does not grow with the file)."""
    labels = list(labels) if labels else None
    errors: list[Finding] = []
    count = labelled = 0
    for checked in iter_checked(path, labels):
        errors.extend(checked.errors)
        if checked.ok:
            count += 1
            labelled += checked.record.labelled
    if errors:
        raise DataError(format_errors(errors))
    if not count:
        raise DataError(f"{path}: no records")
    return RecordStream(path, labels, count, labelled)


def collect_records(checked_records: Iterable[CheckedRecord], *, empty: str) -> list[CluenerRecord]:
    """The valid records, or a `DataError` listing the first errors (`empty` when there is none)."""
    records: list[CluenerRecord] = []
    errors: list[Finding] = []
    for checked in checked_records:
        errors.extend(checked.errors)
        if checked.ok:
            records.append(checked.record)
    if errors:
        raise DataError(format_errors(errors))
    if not records:
        raise DataError(empty)
    return records


def format_errors(errors: list[Finding], limit: int = 20) -> str:
    shown = [str(e) for e in errors[:limit]]
    if len(errors) > limit:
        shown.append(f"... and {len(errors) - limit} more problems")
    return "\n".join(shown)
