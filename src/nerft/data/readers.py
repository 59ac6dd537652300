"""Streaming readers for the shapes CLUE NER data comes in.

JSON Lines, a JSON array, and a stream of concatenated or pretty-printed objects all go through
one line-driven decoder, so memory holds one record at a time whatever the file's size. Char-level
BIO / BIOES / BMES files (one character and its tag a line, blank line between sentences) have
their own reader. Each reader yields `(line, value)` pairs where `value` is a parsed object or a
`Finding` that says why that part of the file could not be read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from nerft.data.records import Entity, Finding
from nerft.errors import DataError
from nerft.io import TOO_MANY_DIGITS

# A record larger than this is not CLUE NER data: stop instead of buffering the whole file.
MAX_RECORD_CHARS = 1 << 20
_SEPARATORS = " \t\r\n,[]"


def open_text(path: str | os.PathLike):
    """Open a UTF-8 file, with or without a BOM, or fail with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return open(path, encoding="utf-8-sig", newline=None)


def detect_format(path: str | os.PathLike) -> str:
    """'json' when the first non-blank character opens a JSON value, else 'tagged'."""
    with open_text(path) as handle:
        for _, line in _decoded_lines(handle, str(path)):
            stripped = line.strip()
            if stripped:
                return "json" if stripped[0] in "[{" else "tagged"
    return "json"


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict | Finding]]:
    """Yield `(line, object)` for every top-level JSON object in the file, in order.

    A record that does not decode is reported as a `Finding` at the line where it starts. It is
    known to be broken when a later line opens an object at its column or left of it (column 0
    in JSON Lines, the records' indentation in a pretty-printed array: nested objects are always
    further right), and reading goes on from there; any record is known to be broken at the end
    of the file.
    """
    source = str(path)
    decoder = json.JSONDecoder()
    buffer = ""
    buffer_line = 1  # line number of buffer[0]
    buffer_column = 0  # and its column
    last_error = ""

    def drain(force: bool) -> Iterator[tuple[int, dict | Finding]]:
        """Yield what the buffer holds, leaving in it only the start of an unfinished object."""
        nonlocal buffer, buffer_line, buffer_column, last_error
        while True:
            start = _skip_separators(buffer)
            # what the separators skipped on this line ("[" of an array), to quote the line whole
            skipped = buffer[buffer.rfind("\n", 0, start) + 1 : start].lstrip()
            buffer_line, buffer_column = _advance(buffer, start, buffer_line, buffer_column)
            buffer = buffer[start:]
            if not buffer:
                return
            if buffer[0] != "{":
                reason = f"expected a JSON object, found {(skipped + buffer.split(chr(10), 1)[0])[:40]!r}"
                yield buffer_line, Finding("error", source, buffer_line, reason)
                newline = buffer.find("\n")
                buffer = "" if newline < 0 else buffer[newline + 1 :]
                buffer_line, buffer_column = buffer_line + 1, 0
                continue
            # An object ends with "}": until the buffer does, decoding it again is wasted work
            # (quadratic in the lines of a pretty-printed record).
            if not force and not buffer.rstrip(_SEPARATORS).endswith("}"):
                return
            try:
                value, end = decoder.raw_decode(buffer)
            except RecursionError:
                raise DataError(f"{source}:{buffer_line}: JSON nested too deeply") from None
            except json.JSONDecodeError as exc:
                if buffer[exc.pos :].strip():
                    last_error = f"{exc.msg} (line {buffer_line + exc.lineno - 1}, column {exc.colno})"
                else:
                    last_error = "the object does not close (a missing '}', ']' or '\"'?)"
                if len(buffer) > MAX_RECORD_CHARS:
                    raise DataError(
                        f"{source}:{buffer_line}: broken JSON: an object that never closes ({last_error})"
                    ) from None
                return
            except ValueError:  # Python's bound on the digits of an integer
                raise DataError(f"{source}:{buffer_line}: {TOO_MANY_DIGITS}") from None
            yield buffer_line, value
            buffer_line, buffer_column = _advance(buffer, end, buffer_line, buffer_column)
            buffer = buffer[end:]

    with open_text(path) as handle:
        for lineno, line in _decoded_lines(handle, source):
            if buffer and _opens_object_within(line, buffer_column):
                yield from drain(force=True)
                if buffer:
                    yield buffer_line, _broken(source, buffer_line, last_error)
                    buffer = ""
            if not buffer:
                buffer_line, buffer_column = lineno, 0
            buffer += line
            yield from drain(force=False)
    yield from drain(force=True)
    if buffer.strip(_SEPARATORS):
        yield buffer_line, _broken(source, buffer_line, last_error or "unexpected end of file")


def _opens_object_within(line: str, column: int) -> bool:
    """Whether `line` starts (after indentation) with "{" at `column` or left of it."""
    indent = len(line) - len(line.lstrip(" \t"))
    return indent <= column and line[indent : indent + 1] == "{"


def _advance(text: str, count: int, line: int, column: int) -> tuple[int, int]:
    """Line and column after the first `count` characters of `text`, which starts at (line, column)."""
    newlines = text.count("\n", 0, count)
    if not newlines:
        return line, column + count
    return line + newlines, count - text.rfind("\n", 0, count) - 1


def _skip_separators(text: str) -> int:
    index = 0
    length = len(text)
    while index < length and text[index] in _SEPARATORS:
        index += 1
    return index


def _broken(source: str, line: int, detail: str) -> Finding:
    return Finding("error", source, line, f"broken JSON: {detail}")


# Tags per scheme. IOB1 files and BIOES/BMES all reduce to: a span starts at B/S (or at I/M/E
# after O or another label) and continues through I/M/E of the same label.
_BEGIN = {"B", "S"}
_INSIDE = {"I", "M", "E"}


def iter_tagged_sentences(path: str | os.PathLike) -> Iterator[tuple[int, dict | Finding]]:
    """Yield `(line, {"text", "entities"})` per sentence of a char-level BIO/BIOES/BMES file.

    The line is where the sentence starts. A line that is not `CHAR TAG` or a tag outside the
    schemes is a `Finding` for the whole sentence.
    """
    source = str(path)
    chars: list[str] = []
    tags: list[str] = []
    start_line = 0
    problem: Finding | None = None

    def flush():
        if problem is not None:
            return start_line, problem
        return start_line, {"text": "".join(chars), "entities": _spans_from_tags(chars, tags)}

    with open_text(path) as handle:
        for lineno, raw in _decoded_lines(handle, source):
            line = raw.rstrip("\r\n")
            if not line.strip():
                if chars or problem:
                    yield flush()
                chars, tags, problem = [], [], None
                continue
            if not chars and problem is None:
                start_line = lineno
            if problem is not None:
                continue
            parsed = _parse_tagged_line(line)
            if isinstance(parsed, str):
                problem = Finding("error", source, lineno, parsed)
                continue
            char, tag = parsed
            chars.append(char)
            tags.append(tag)
    if chars or problem:
        yield flush()


def _decoded_lines(handle, source: str) -> Iterator[tuple[int, str]]:
    """`(line number, line)` of an open text file; bytes that are not UTF-8 end in one `DataError`
    naming the line (a file cut inside a character, one in another encoding)."""
    try:
        yield from enumerate(handle, start=1)
    except UnicodeDecodeError as exc:
        # The text layer decodes ahead in chunks: the bad byte's line is found in the bytes.
        raise DataError(f"{source}:{_first_undecodable_line(handle.name)}: not UTF-8 text ({exc.reason})") from None


def _first_undecodable_line(path: str) -> int:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return line + chunk[: max(exc.start, 0)].count(b"\n")
            line += chunk.count(b"\n")
    return line


def _parse_tagged_line(line: str) -> tuple[str, str] | str:
    # The character itself may be a space (CLUENER text has them), so split from the right.
    if "\t" in line:
        char, _, tag = line.rpartition("\t")
    else:
        char, _, tag = line.rpartition(" ")
    tag = tag.strip()
    if len(char) != 1:
        return f"expected one character and its tag, found {line!r}"
    if tag != "O" and (len(tag) < 3 or tag[0] not in _BEGIN | _INSIDE or tag[1] not in "-_"):
        return f"unknown tag {tag!r} (expected O, or B-/I-/E-/M-/S- followed by a label)"
    return char, tag


def _spans_from_tags(chars: list[str], tags: list[str]) -> list[Entity]:
    entities: list[Entity] = []
    start: int | None = None
    label = ""

    def close(end: int):
        entities.append(Entity(start, end, label, "".join(chars[start : end + 1])))

    for index, tag in enumerate(tags):
        prefix, tag_label = (tag[0], tag[2:]) if tag != "O" else ("O", "")
        continues = prefix in _INSIDE and start is not None and tag_label == label
        if start is not None and not continues:
            close(index - 1)
            start = None
        if prefix == "O":
            continue
        if start is None:
            start, label = index, tag_label
        if prefix in {"E", "S"}:
            close(index)
            start = None
    if start is not None:
        close(len(tags) - 1)
    return entities
