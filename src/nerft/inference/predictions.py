"""Prediction rows, and the resumable file they are written to.

A predictions file is JSON Lines, one row per input record in input order, the shape `nerft eval`
reads: `predict` holds the model's raw answer, and `entities` what it names, parsed. An entity
that is not a substring of its sentence cannot be a CLUE entity (a model that "corrects" a name,
or invents one): by default it is moved to `dropped`, so it is counted but not scored.

Each entity carries its character offsets `start` and `end`, with `end` EXCLUSIVE
(`text[start:end] == entity`, as in doccano, Label Studio and spaCy; CLUENER's own spans are
inclusive). The model names strings, not places, so the offsets follow one rule (`ground_entities`):
the distinct entities are placed longest first (ties in answer order), each at its first occurrence
that overlaps no entity placed before it ("北京大学" claims its characters before "北京" is looked
for); when every occurrence overlaps, at its first occurrence (a nest, as CLUENER has). An entity
whose string occurs more than once in the sentence is marked `"ambiguous": true`: its place is the
rule's choice, not the model's. An entity kept with `--keep-unsupported` that is not in the
sentence has `start` and `end` null.

Each entity has a `confidence` in [0, 1] (None where the engine reported no log-probabilities):
the probability the model gave the tokens that wrote it (`nerft.inference.grounding`); the row's
own `confidence` is that of the whole answer, "no entity" included. With `--min-confidence` the
entities below it move from `entities` to `uncertain`. An answer cut at the token limit inside a
character (a token can hold part of one) loses that part: `predict` ends at its last whole character.

While predicting, rows are appended to `<out>.partial` as they come, flushed one by one, so a run
cut short (a server that went away, Ctrl-C) keeps them; the next run with the same output checks
that the kept rows are the first sentences of its input and predicts only the rest. Beside it,
`<out>.partial.json` records everything that decides an answer (engine, model, adapter, template,
prompt format and its text, labels, grounding, constrained decoding, the input file's identity):
a run with any of them different is refused, naming the difference, so no file mixes the answers
of two settings; `--restart` deletes the kept rows instead. Decoding is greedy in every engine, with
the prompt format's length bound, so no other generation setting changes an answer. The file has
one writer at a time (`nerft.io.sole_writer` on `<out>`, taken before a model loads). Input, kept
rows and new rows all stream: memory does not grow with the number of sentences. The finished
file is renamed to `<out>` in one step, so `<out>` is never half-written.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nerft.data.records import CluenerRecord
from nerft.errors import DataError, ServerError
from nerft.inference.engines import Generation, whole_characters
from nerft.inference.grounding import answer_confidence, item_confidences
from nerft.io import json_line, json_row, naming_os_errors, read_json, replace_dir, write_json_atomic
from nerft.metrics.clue import split_in_text
from nerft.metrics.parse import Mention, parse_output
from nerft.metrics.spans import occurrences
from nerft.prompts import PromptFormat


def prediction_row(
    record: CluenerRecord,
    generation: Generation,
    *,
    fmt: PromptFormat | None = None,
    keep_unsupported: bool = False,
    min_confidence: float | None = None,
) -> dict:
    """The predictions-file row of one record: raw answer, parsed entities (each with its
    `confidence`, None where the engine reported no log-probabilities), dropped entities, and the
    answer's own `confidence`."""

    generation = whole_characters(generation)
    mentions = parse_output(generation.text)
    if keep_unsupported:
        kept, dropped = list(dict.fromkeys(mentions or [])), []
    else:
        kept, dropped = split_in_text(mentions or [], record.text)
    confidences: dict = {}
    if generation.tokens is not None and fmt is not None:
        confidences = item_confidences(fmt, generation.tokens)
    entities = ground_entities(record.text, kept)
    for entity in entities:
        entity["confidence"] = confidences.get((entity["label"], entity["text"]))
    uncertain = []
    if min_confidence is not None:
        uncertain = [e for e in entities if e["confidence"] is not None and e["confidence"] < min_confidence]
        entities = [e for e in entities if e not in uncertain]
    row: dict = {} if record.id is None else {"id": record.id}
    row.update(
        text=record.text,
        predict=generation.text,
        entities=entities,
        dropped=[{"label": label, "text": text} for label, text in dropped],
    )
    row["unparseable"] = mentions is None
    row["finish_reason"] = generation.finish_reason
    row["confidence"] = answer_confidence(generation.tokens) if generation.tokens is not None else None
    if min_confidence is not None:
        row["uncertain"] = uncertain  # below --min-confidence, left out of "entities"
    return row


def ground_entities(text: str, mentions: list[Mention]) -> list[dict]:
    """`{"label", "text", "start", "end", "ambiguous"}` per distinct mention, in answer order, placed
    by the rule of the module docstring (`end` exclusive)."""

    distinct = list(dict.fromkeys(mentions))
    taken = [False] * len(text)
    placed: dict[Mention, dict] = {}
    for label, entity in sorted(distinct, key=lambda mention: -len(mention[1])):
        starts = occurrences(text, entity)
        start = next((s for s in starts if not any(taken[s : s + len(entity)])), starts[0] if starts else None)
        if start is not None:
            taken[start : start + len(entity)] = [True] * len(entity)
        placed[(label, entity)] = {
            "label": label,
            "text": entity,
            "start": start,
            "end": None if start is None else start + len(entity),
            "ambiguous": len(starts) > 1,
        }
    return [placed[mention] for mention in distinct]


@dataclass
class PredictionCounts:
    """What a prediction run produced, for the summary line and `--json`."""

    records: int = 0
    resumed: int = 0
    entities: int = 0
    dropped: int = 0
    unparseable: int = 0
    truncated: int = 0
    uncertain: int = 0
    seconds: float = 0.0
    engine: dict = field(default_factory=dict)

    def add(self, row: dict) -> None:
        self.entities += len(row["entities"])
        self.dropped += len(row["dropped"])
        self.unparseable += row["unparseable"]
        self.truncated += row["finish_reason"] == "length"
        self.uncertain += len(row.get("uncertain", ()))

    @property
    def predicted(self) -> int:
        return self.records - self.resumed

    def summary(self, out=None) -> str:
        """One line: how many, where, how fast, and what was found or lost."""
        where = f" to {out}" if out is not None else ""
        resumed = f" ({self.resumed} kept from an earlier run)" if self.resumed else ""
        rate = (
            f" in {self.seconds:.1f} s ({self.predicted / self.seconds:.2f} sentences/s)"
            if self.seconds and self.predicted
            else ""
        )
        return (
            f"wrote {self.records} predictions{where}{resumed}{rate}: {self.entities} entities, "
            f"{self.dropped} dropped (not in their sentence), {self.unparseable} unparseable, "
            f"{self.truncated} cut at the token limit"
            + (f", {self.uncertain} below --min-confidence" if self.uncertain else "")
        )

    def to_dict(self) -> dict:
        return {
            "records": self.records,
            "predicted": self.predicted,
            "resumed": self.resumed,
            "entities": self.entities,
            "dropped_not_in_text": self.dropped,
            "unparseable": self.unparseable,
            "truncated": self.truncated,
            "uncertain": self.uncertain,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.predicted / self.seconds, 3) if self.seconds else None,
            "engine": self.engine,
        }


class ResumablePredictions:
    """`<out>.partial`, appended row by row, renamed to `<out>` when every record has its row."""

    def __init__(self, out: str | os.PathLike, source: dict, *, restart: bool = False):
        self.out = Path(out)
        self.partial = partial_path(self.out)
        self.meta = self.out.with_name(self.out.name + ".partial.json")
        # What answers: a resumed run must not mix two settings' answers. The endpoint may move.
        self.source = {key: value for key, value in source.items() if key != "endpoint"}
        self.restart = restart
        self._handle = None
        self.writing = self.partial  # the file rows are appended to

    def resume(self, records: Iterator[CluenerRecord]) -> Iterator[dict]:
        """The rows kept from an earlier run, each checked against the next record of `records`
        (which it consumes); nothing when there is none, or with `restart` (they are deleted).
        Exhaust it before appending."""
        if self.restart:
            self.partial.unlink(missing_ok=True)
            self.meta.unlink(missing_ok=True)
            return
        if not self.partial.is_file():
            return
        self.check_settings()
        yield from kept_rows(self.partial, records)

    def check_settings(self) -> None:
        """Refuse kept rows that were answered with other settings than this run's."""
        if self.meta.is_file():  # a partial file put there by hand has none: its sentences are still checked
            started = read_json(self.meta, expect=object, hint=RESTART_HINT)
            if started != self.source:
                raise DataError(
                    f"{self.partial} was started with other settings: {_difference(started, self.source)}",
                    hint=RESTART_HINT,
                )

    def append(self, row: dict) -> None:
        if self._handle is None:
            write_json_atomic(self.meta, self.source)
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.partial, "a", encoding="utf-8", newline="\n")
        with naming_os_errors(self.partial):
            self._handle.write(json_row(row))
            self._handle.flush()

    def finish(self) -> None:
        if self._handle is None:  # nothing was predicted now: everything came from the partial file
            self.partial.touch()
            self._handle = open(self.partial, "a", encoding="utf-8")
        with naming_os_errors(self.partial):
            os.fsync(self._handle.fileno())
        self.close()
        os.replace(self.partial, self.out)
        self.meta.unlink(missing_ok=True)

    def close(self) -> None:
        # Closing flushes what a failed write left buffered: on a full disk that fails again, and
        # that error, raised while the first is handled, must name the file too.
        handle, self._handle = self._handle, None
        if handle is not None:
            with naming_os_errors(self.writing):
                handle.close()


SHARD_NAME = "part-{:05d}.jsonl"
SHARD_FILE = re.compile(r"part-\d{5,}\.jsonl")
SHARD_FOLDER_HINT = "give --out a new folder, or one of an earlier run's shards"


class ShardedPredictions(ResumablePredictions):
    """`<out>` as a folder of shards for a corpus too large for one file: `part-00000.jsonl`,
    `part-00001.jsonl`, ..., each `shard_rows` rows in input order (the last one fewer), so
    `cat <out>/part-*.jsonl` is the one file `--out FILE` would hold. Written as `<out>.partial/`,
    one shard after the other (each made durable before the next is begun), and put at `<out>` in
    one step when every record has its row (`nerft.io.replace_dir`: a shard folder of an earlier
    run there is replaced; `shard_folder_problem` refuses any other folder first). The shard size
    is one of the kept settings: a resumed run must cut its shards alike."""

    def __init__(self, out: str | os.PathLike, source: dict, *, shard_rows: int, restart: bool = False):
        super().__init__(out, {**source, "shard_rows": shard_rows}, restart=restart)
        self.shard_rows = shard_rows
        self._shard = 0  # the shard rows are appended to, and the rows it holds
        self._in_shard = 0
        self._started = False  # the settings are recorded beside the partial folder

    def shard(self, index: int) -> Path:
        return self.partial / SHARD_NAME.format(index)

    def resume(self, records: Iterator[CluenerRecord]) -> Iterator[dict]:
        if self.restart:
            shutil.rmtree(self.partial, ignore_errors=True)
            self.meta.unlink(missing_ok=True)
            return
        if not self.partial.is_dir():
            return
        self.check_settings()
        index = 0
        while (path := self.shard(index)).is_file():
            self._shard, self._in_shard = index, 0
            for row in kept_rows(path, records, first=index * self.shard_rows + 1):
                self._in_shard += 1
                if self._in_shard > self.shard_rows:
                    raise DataError(f"{path}: holds more than {self.shard_rows} rows, a shard's", hint=RESTART_HINT)
                yield row
            if self._in_shard < self.shard_rows:
                if self.shard(index + 1).exists():
                    raise DataError(
                        f"{path}: holds {self._in_shard} rows, not {self.shard_rows}, and another shard follows it",
                        hint=RESTART_HINT,
                    )
                return
            index += 1
        self._shard, self._in_shard = index, 0

    def append(self, row: dict) -> None:
        if self._handle is None:
            if not self._started:
                write_json_atomic(self.meta, self.source)
                self._started = True
            with naming_os_errors(self.partial):
                self.partial.mkdir(parents=True, exist_ok=True)
            self.writing = self.shard(self._shard)
            self._handle = open(self.writing, "a", encoding="utf-8", newline="\n")
        with naming_os_errors(self.writing):
            self._handle.write(json_row(row))
            self._handle.flush()
        self._in_shard += 1
        if self._in_shard == self.shard_rows:  # full: durable before the next one is begun
            self._seal()
            self._shard, self._in_shard = self._shard + 1, 0

    def finish(self) -> None:
        self._seal()
        with naming_os_errors(self.partial):
            self.partial.mkdir(parents=True, exist_ok=True)
        if (problem := shard_folder_problem(self.out)) is not None:
            raise DataError(f"{self.out}: {problem}", hint=SHARD_FOLDER_HINT)
        with naming_os_errors(self.out):
            replace_dir(self.partial, self.out)
        self.meta.unlink(missing_ok=True)

    def _seal(self) -> None:
        if self._handle is not None:
            with naming_os_errors(self.writing):
                os.fsync(self._handle.fileno())
        self.close()


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The shards of a folder `ShardedPredictions` wrote, in order."""
    shards = [item for item in Path(folder).iterdir() if SHARD_FILE.fullmatch(item.name)]
    return sorted(shards, key=lambda item: int(item.name[5:-6]))


def shard_folder_problem(out: str | os.PathLike) -> str | None:
    """Why `out` cannot receive the shards of `ShardedPredictions`: it is a file, or a folder that
    holds anything but shards (an earlier run's, which are replaced); None when it can."""
    out = Path(out)
    if not out.exists():
        return None
    if not out.is_dir():
        return "is a file, not a folder of shards"
    others = sorted(item.name for item in out.iterdir() if not SHARD_FILE.fullmatch(item.name))
    if others:
        return (
            f"holds {others[0]}"
            + (f" and {len(others) - 1} more" if len(others) > 1 else "")
            + ", not only shards: nerft would delete it"
        )
    return None


RESTART_HINT = "--restart deletes them and predicts everything again"


def kept_rows(path: Path, records: Iterator[CluenerRecord], *, first: int = 1) -> Iterator[dict]:
    """The complete rows of the kept file `path`, each checked against the next of `records` (which
    it consumes; `first` is the number of the record its first line answers); a last line cut
    mid-write is truncated away, to be predicted again."""
    complete_bytes = 0
    with open(path, "rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break  # the run stopped mid-line: that row is predicted again
            row = json_line(line.decode("utf-8", "replace"), str(path), lineno, hint=RESTART_HINT)
            record = next(records, None)
            if record is None or row.get("text") != record.text:
                raise DataError(
                    f"{path}:{lineno}: predicts another sentence than record {first + lineno - 1} of the input",
                    hint=RESTART_HINT,
                )
            yield row
            complete_bytes += len(line)
    if complete_bytes != path.stat().st_size:
        os.truncate(path, complete_bytes)


def partial_path(out: str | os.PathLike) -> Path:
    """Where the rows of an unfinished prediction into `out` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def file_identity(path: str | os.PathLike) -> str:
    """A file as a resumed run must find it again: its resolved path, size and SHA-256."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{path.resolve()} ({path.stat().st_size} bytes, sha256 {digest.hexdigest()[:16]})"


def prediction_source(
    description: dict, fmt: PromptFormat, *, max_chars: int, input_file: str | os.PathLike | None = None
) -> dict:
    """Everything that decides an answer, kept beside a partial predictions file: a resumed run
    must answer alike (`ResumablePredictions`). `description` is the engine's (engine, model,
    adapter, template, grounding); decoding is greedy everywhere, its length bound the format's;
    `max_chars` is where texts are cut into pieces (`nerft.inference.documents`); `input_file`, the
    file the records come from."""
    import hashlib

    prompt = hashlib.sha256(f"{fmt.system}\n{fmt.user_message('')}".encode()).hexdigest()[:16]
    record = {**description, "prompt": fmt.name, "prompt_sha256": prompt, "labels": ",".join(fmt.labels)}
    record["piece_chars"] = max_chars
    if input_file is not None:
        record["input"] = file_identity(input_file)
    return record


def resumable(
    out: str | os.PathLike | None,
    description: dict,
    fmt: PromptFormat,
    *,
    max_chars: int,
    input_file: str | os.PathLike | None = None,
    restart: bool = False,
    shard_rows: int | None = None,
) -> ResumablePredictions | None:
    """The resumable predictions file `out` with what decides its answers (`prediction_source`),
    a folder of shards of `shard_rows` rows each with it (`ShardedPredictions`), or None without
    `out`: only then is the input file read for its identity."""
    if out is None:
        return None
    settings = prediction_source(description, fmt, max_chars=max_chars, input_file=input_file)
    if shard_rows is not None:
        return ShardedPredictions(out, settings, shard_rows=shard_rows, restart=restart)
    return ResumablePredictions(out, settings, restart=restart)


def keep_resumed(store: ResumablePredictions, records: Iterator[CluenerRecord], counts: PredictionCounts, sink) -> None:
    """The rows an earlier run kept in `store`, checked against `records` (which it consumes),
    counted and given to `sink`."""
    for row in store.resume(records):
        counts.add(row)
        counts.resumed += 1
        if sink:
            sink(row)


def write_rows(
    rows: Iterable[dict],
    *,
    store: ResumablePredictions | None,
    sink: Callable[[dict], None] | None,
    counts: PredictionCounts,
    total: int | None = None,
) -> None:
    """Append each row to `store` as it comes (renamed into place when `rows` ends), give it to
    `sink`, count it; a `ServerError` on the way says how many rows the partial file keeps."""
    start = time.perf_counter()
    done = 0
    try:
        for row in rows:
            if store:
                store.append(row)
            if sink:
                sink(row)
            counts.add(row)
            done += 1
        if store:
            store.finish()
    except ServerError as exc:
        if store is None:
            raise
        have = counts.resumed + done
        of, others = (f" of {total}", f"the other {total - have}") if total is not None else ("", "the others")
        raise ServerError(
            f"{exc.message}; {have}{of} predictions kept in {store.partial}",
            hint="; ".join(filter(None, [exc.hint, f"run the same command again to predict {others}"])),
        ) from None
    finally:
        if store:
            store.close()
        counts.records = counts.resumed + done
        counts.seconds = time.perf_counter() - start


def _difference(started, now: dict) -> str:
    """What differs between the settings a partial file was started with and the current ones."""
    if not isinstance(started, dict):
        return "settings of another kind"
    keys = [key for key in dict.fromkeys([*started, *now]) if started.get(key) != now.get(key)]
    return "; ".join(f"{key} {started.get(key)}, not {now.get(key)}" for key in keys)
