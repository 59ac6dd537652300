"""`prepare`: validate CLUE NER files, write alpaca JSON per split, register them for LLaMA-Factory.

Two streaming passes over each input keep memory flat whatever the file's size: the first
validates and counts, the second converts and writes. Nothing is written unless every record is
valid (or `skip_invalid` is set), and every output file, `dataset_info.json` included, is written
to a temporary file and renamed into place only once all of them are complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nerft.data.load import format_errors, iter_checked
from nerft.data.records import CluenerRecord, Finding
from nerft.errors import DataError
from nerft.io import atomic_writer, read_json, refuse_collisions, update_json, write_json_atomic
from nerft.progress import progress
from nerft.prompts import PromptFormat, get_format

DATASET_INFO = "dataset_info.json"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}


@dataclass
class SplitSummary:
    """What went into one split."""

    name: str
    file: str
    records: int = 0
    entities: Counter = field(default_factory=Counter)
    total_chars: int = 0
    max_chars: int = 0

    def add(self, record: CluenerRecord) -> None:
        self.records += 1
        self.total_chars += len(record.text)
        self.max_chars = max(self.max_chars, len(record.text))
        self.entities.update(entity.label for entity in record.entities)

    @property
    def mean_chars(self) -> float:
        return self.total_chars / self.records if self.records else 0.0

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "records": self.records,
            "entities": dict(sorted(self.entities.items())),
            "mean_chars": round(self.mean_chars, 2),
            "max_chars": self.max_chars,
        }


@dataclass
class PrepareResult:
    out_dir: Path
    dataset_names: dict[str, str]
    splits: dict[str, SplitSummary]
    findings: list[Finding]
    skipped: int
    prompt: str

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "prompt": self.prompt,
            "datasets": self.dataset_names,
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "skipped": self.skipped,
        }


def prepare_dataset(
    *,
    train: str | os.PathLike,
    dev: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "data/dataset",
    name: str = "cluener",
    val_size: float = 0.1,
    seed: int = 42,
    labels: list[str] | None = None,
    prompt: str = "compact",
    skip_invalid: bool = False,
    checked: CheckedInputs | None = None,
) -> PrepareResult:
    """Convert and register CLUE NER data. Raises `DataError` (and writes nothing) on invalid input.

    `checked`: these inputs' `check_inputs` already done (by `nerft train`'s plan), not done again."""
    if not 0 <= val_size < 1:
        raise DataError(f"--val-size must be in [0, 1), got {val_size}")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise DataError(f"dataset name {name!r} may only hold letters, digits, '-' and '_'")
    fmt = get_format(prompt, labels)
    out_dir = Path(out_dir)
    read_dataset_info(out_dir)  # refuse a broken dataset_info.json before writing anything
    inputs = {"train": train, "dev": dev, "test": test}
    inputs = {split: Path(path) for split, path in inputs.items() if path is not None}
    refuse_collisions(
        {f"--{split}": path for split, path in inputs.items()},
        prepared_files(out_dir, name),
        hint="choose another --out folder or --name",
    )
    checked = checked or check_inputs(inputs, labels=labels, skip_invalid=skip_invalid, val_size=val_size, fmt=fmt)
    valid_counts, invalid, findings = checked.valid_counts, checked.invalid, checked.findings
    split_dev, dev_target = checked.split_dev, checked.dev_target

    names = {
        split: f"{name}_{split}"
        for split in ("train", "dev", "test")
        if split in inputs or (split == "dev" and split_dev)
    }
    summaries = {split: SplitSummary(split, f"{names[split]}.json") for split in names}

    with contextlib.ExitStack() as stack:
        writers = {
            split: stack.enter_context(_AlpacaArrayWriter(out_dir / summary.file))
            for split, summary in summaries.items()
        }
        # The same records in CLUE's own shape: the gold file `nerft eval --gold` scores against,
        # also for a dev split cut out of train.
        golds = {split: stack.enter_context(atomic_writer(out_dir / gold_file(name, split))) for split in summaries}
        rng = random.Random(seed)
        for split, path in inputs.items():
            remaining, wanted = valid_counts[split], dev_target
            for record in progress(
                _valid_records(path, labels, fmt), total=valid_counts[split], desc=f"writing {path.name}"
            ):
                target = split
                if split == "train" and split_dev:
                    if rng.random() * remaining < wanted:
                        target, wanted = "dev", wanted - 1
                    remaining -= 1
                writers[target].write(fmt.example(record))
                golds[target].write(json.dumps(record.to_clue(), ensure_ascii=False) + "\n")
                summaries[target].add(record)
        # Leaving the block without an exception renames every complete split file into place;
        # an exception anywhere removes all of the temporary files instead.

    register_datasets(out_dir, {names[split]: summaries[split].file for split in names})
    write_json_atomic(
        out_dir / f"{name}_meta.json",
        {
            "prompt": fmt.name,
            "system": fmt.system,
            "labels": list(fmt.labels),
            "datasets": names,
            "gold": {split: gold_file(name, split) for split in names},
            "splits": {split: summary.to_dict() for split, summary in summaries.items()},
        },
    )
    return PrepareResult(
        out_dir, names, summaries, findings, invalid, fmt.name
    )  # invalid > 0 only with skip_invalid (else refused above)


@dataclass
class CheckedInputs:
    """Pass 1 of `prepare`: every input validated and its valid records counted, nothing written."""

    valid_counts: dict[str, int]
    invalid: int
    findings: list[Finding]
    split_dev: bool  # a dev split is cut out of train (no dev file, val_size > 0)
    dev_target: int  # records the cut moves to dev

    @property
    def split_records(self) -> dict[str, int]:
        """Records per written split (train less the dev cut, dev, test)."""
        counts = dict(self.valid_counts)
        if self.split_dev:
            counts["train"] -= self.dev_target
            counts = {
                "train": counts["train"],
                "dev": self.dev_target,
                **{k: v for k, v in counts.items() if k != "train"},
            }
        return counts


def check_inputs(
    inputs: dict[str, Path],
    *,
    labels: list[str] | None,
    skip_invalid: bool,
    val_size: float,
    on_valid: Callable[[CluenerRecord], None] | None = None,
    fmt: PromptFormat | None = None,
) -> CheckedInputs:
    """Validate every input file (`on_valid` sees each valid record); a `DataError` listing every
    problem, errors first, when a record is invalid (without `skip_invalid`) or the split is empty.
    With `fmt`, a record whose entities its answer in that format would not read back as is
    invalid too (`PromptFormat.unreadable`)."""
    findings: list[Finding] = []
    valid_counts: dict[str, int] = {}
    invalid = 0
    for split, path in inputs.items():
        valid = 0
        for checked in progress(iter_checked(path, labels, fmt), desc=f"checking {path.name}"):
            findings.extend(checked.findings)
            valid += checked.ok
            invalid += not checked.ok
            if checked.ok and on_valid is not None:
                on_valid(checked.record)
        valid_counts[split] = valid
    errors = [f for f in findings if f.severity == "error"]
    if errors and not skip_invalid:
        warnings = [f for f in findings if f.severity != "error"]  # every problem is reported, errors first
        raise DataError(
            format_errors(errors + warnings)
            + f"\n{invalid} invalid record(s); nothing was written (--skip-invalid writes the valid ones)"
        )
    for split, count in valid_counts.items():
        if count == 0:
            raise DataError(f"{inputs[split]}: no valid records")

    # Split train into train/dev by Knuth's selection sampling: exactly round(n * val_size)
    # records, chosen uniformly by the seed, in O(1) memory.
    split_dev = "dev" not in inputs and val_size > 0
    dev_target = round(valid_counts["train"] * val_size) if split_dev else 0
    if split_dev and dev_target == 0:
        raise DataError(f"--val-size {val_size} of {valid_counts['train']} records selects no dev record")
    if split_dev and dev_target == valid_counts["train"]:
        raise DataError(f"--val-size {val_size} leaves no train records")
    return CheckedInputs(valid_counts, invalid, findings, split_dev, dev_target)


def shared_folder_name(data) -> str:
    """The dataset name prefix of a training whose `data.dataset_dir` other trainings may share:
    `data.name-<digest>`, the digest of the input files' bytes and of every setting that changes
    the prepared files. Two trainings with different data never overwrite each other's files
    there; two with the same data write the same files (atomically) and share them."""
    digest = hashlib.sha256()
    for path in (data.train, data.dev):
        digest.update(b"\0input\0")
        if path is not None and Path(path).is_file():
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(str(path).encode())  # a dry run before the data exists
    settings = [data.name, data.prompt, data.labels, data.val_size, data.seed, data.skip_invalid]
    digest.update(json.dumps(settings, ensure_ascii=False).encode())
    return f"{data.name}-{digest.hexdigest()[:10]}"


def read_prepare_meta(path: str | os.PathLike) -> dict:
    """A `<name>_meta.json` that `prepare` wrote: its "datasets", "prompt" and "labels" checked, or
    one `DataError` naming the file."""
    meta = read_json(path, what="nerft prepare's notes on a dataset")
    checks = {
        "datasets": lambda v: isinstance(v, dict) and all(isinstance(name, str) for name in v.values()),
        "prompt": lambda v: isinstance(v, str),
        "labels": lambda v: isinstance(v, list) and all(isinstance(label, str) for label in v),
    }
    wrong = [key for key, check in checks.items() if key in meta and not check(meta[key])]
    if wrong:
        raise DataError(
            f"{path}: {', '.join(wrong)}: not as `nerft prepare` writes it",
            hint="prepare the data again, or remove the file",
        )
    return meta


def prepared_files(out_dir: Path, name: str) -> dict[str, Path]:
    """Every file `prepare_dataset` may write for dataset `name` into `out_dir`, by what it is."""
    files = {"dataset_info.json": out_dir / "dataset_info.json", "the meta file": out_dir / f"{name}_meta.json"}
    for split in ("train", "dev", "test"):
        files[f"the {split} examples"] = out_dir / f"{name}_{split}.json"
        files[f"the {split} gold records"] = out_dir / gold_file(name, split)
    return files


def gold_file(name: str, split: str) -> str:
    """File name of a split's records in CLUE's JSON Lines shape (labels and spans kept)."""
    return f"{name}_{split}.gold.jsonl"


def _valid_records(path: Path, labels, fmt: PromptFormat) -> Iterator[CluenerRecord]:
    for checked in iter_checked(path, labels, fmt):
        if checked.ok:
            yield checked.record


class _AlpacaArrayWriter:
    """Streams examples into a JSON array in a temporary file, renamed into place on a clean exit."""

    def __init__(self, path: Path):
        self.path = path
        self._count = 0

    def __enter__(self):
        self._context = atomic_writer(self.path)
        self._handle = self._context.__enter__()
        self._handle.write("[")
        return self

    def write(self, example: dict) -> None:
        self._handle.write(",\n  " if self._count else "\n  ")
        self._handle.write(json.dumps(example, ensure_ascii=False))
        self._count += 1

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._handle.write("\n]\n" if self._count else "]\n")
        return self._context.__exit__(exc_type, exc, tb)


def read_dataset_info(out_dir: Path) -> dict:
    """The entries of `out_dir/dataset_info.json` ({} when there is none), or a `DataError`."""
    info_path = Path(out_dir) / DATASET_INFO
    if not info_path.exists():
        return {}
    return read_json(
        info_path, what="LLaMA-Factory's dataset registry", hint="fix or remove it, nerft will not overwrite it"
    )


def register_datasets(out_dir: Path, entries: dict[str, str]) -> None:
    """Merge alpaca entries into `out_dir/dataset_info.json`, keeping every other entry as it was.

    Under the file's lock: concurrent `nerft prepare` runs into one folder each add their entries."""

    def merge(info: dict) -> dict:
        updated = dict(info)
        for dataset, file_name in entries.items():
            updated[dataset] = {"file_name": file_name, "formatting": "alpaca", "columns": dict(ALPACA_COLUMNS)}
        return updated

    update_json(Path(out_dir) / DATASET_INFO, merge, read=lambda path: read_dataset_info(path.parent))
