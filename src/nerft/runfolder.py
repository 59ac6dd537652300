"""The run folder: what `nerft train` leaves behind, and what every later command reads.

A run folder holds
- `run.json`: the manifest below (machine-readable, written by `nerft train`);
- `nerft.yaml`: nerft's resolved config, the one that ran;
- `llamafactory_train.yaml`: the exact arguments given to `llamafactory-cli train`;
- `data/`: the prepared datasets (unless `data.dataset_dir` puts them elsewhere);
- LLaMA-Factory's own outputs: `adapter_config.json`, `adapter_model.safetensors`,
  `trainer_log.jsonl`, `all_results.json`, `training_loss.png`, `checkpoint-*/`, ...
- `eval/<gold name>/`: `nerft eval --run`'s `predictions.jsonl`, `report.json`, `errors.jsonl`.

The file names live here only; `RunFolder` gives their paths and reads them (the trainer log with
one rule, parsed once).

Inference reads the prompt format, system prompt, template and base model from `run.json`, so the
prompt at inference is the prompt at training.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from nerft.config.render import flatten_config
from nerft.config.schema import known_prompt
from nerft.errors import ModelError, validation_problem
from nerft.io import json_line, locked, read_json, read_text, read_yaml, write_json_atomic
from nerft.prompts import CLUENER_LABELS, PromptFormat, get_format

RUN_MANIFEST = "run.json"
RUN_CONFIG = "nerft.yaml"
LLAMAFACTORY_TRAIN = "llamafactory_train.yaml"
DATA_DIR = "data"
TRAINER_LOG = "trainer_log.jsonl"  # LLaMA-Factory's LogCallback: one JSON object per logging step
RESULT_FILES = ("all_results.json", "train_results.json")  # transformers' final metrics, the first found
LOSS_PLOT = "training_loss.png"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json")
EVAL_DIR = "eval"  # `nerft eval --run` writes RUN/eval/<gold name>/report.json; `nerft report` reads it
EVAL_REPORT = "report.json"
PREDICTIONS = "predictions.jsonl"
ERRORS = "errors.jsonl"
# run.json's format. Files written before it was versioned have no "schema_version" and are version 1.
RUN_SCHEMA_VERSION = 1


@dataclass(config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class RunInfo:
    """Everything inference needs to know about a trained run: run.json, validated (unknown keys,
    missing or mistyped values are refused with one line each)."""

    run_dir: Path
    base_model: str = Field(min_length=1)  # model_name_or_path given to LLaMA-Factory (a local folder or a hub id)
    template: str = Field(min_length=1)  # LLaMA-Factory chat template, e.g. "qwen"
    finetuning_type: Literal["lora", "full", "freeze"] = "lora"
    prompt: str = "compact"  # nerft prompt format
    labels: list[str] = field(default_factory=lambda: list(CLUENER_LABELS))
    adapter_dir: Optional[Path] = None  # folder with adapter_config.json; None for full fine-tuning
    quantization_bit: Optional[Literal[2, 3, 4, 5, 6, 8]] = None
    merged_model: Optional[Path] = None  # set by `nerft export`
    cutoff_len: Optional[int] = Field(None, gt=0)
    schema_version: Literal[1] = RUN_SCHEMA_VERSION

    @field_validator("prompt")
    @classmethod
    def check_prompt(cls, value: str) -> str:
        return known_prompt(value)

    @field_validator("labels", mode="before")
    @classmethod
    def check_labels(cls, value):
        if not isinstance(value, list):  # a string would be read as a list of its characters
            raise ValueError(f"must be a list of label names, not {type(value).__name__}")
        if not value or len(set(value)) != len(value):
            raise ValueError("must name each label once, at least one")
        return value

    def prompt_format(self) -> PromptFormat:
        return get_format(self.prompt, self.labels)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("run_dir")
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in data.items()}


def write_run(info: RunInfo) -> Path:
    path = Path(info.run_dir) / RUN_MANIFEST
    write_json_atomic(path, info.to_json())
    return path


def update_run(run_dir: str | os.PathLike, **changes) -> RunInfo:
    """Read run.json, change some of its values and write it back, under its lock (two exports of
    one run each keep their change)."""
    from dataclasses import replace

    with locked(Path(run_dir) / RUN_MANIFEST):
        info = replace(load_run(run_dir), **changes)
        write_run(info)
    return info


def load_run(run_dir: str | os.PathLike) -> RunInfo:
    """Read and validate a run folder's manifest, or fail with a message that says what is wrong."""
    run_dir = Path(run_dir)
    manifest = run_dir / RUN_MANIFEST
    if not manifest.is_file():
        raise ModelError(
            f"{run_dir}: not a nerft run folder (no {RUN_MANIFEST})",
            hint="make one with `nerft train CONFIG --output-dir DIR`",
        )
    data = read_json(manifest, error=ModelError, what="nerft's run manifest")
    version = data.get("schema_version", RUN_SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > RUN_SCHEMA_VERSION:
        raise ModelError(
            f"{manifest}: schema_version {version} is newer than this nerft reads ({RUN_SCHEMA_VERSION})",
            hint="upgrade nerft",
        )
    try:
        info = _RUN_INFO.validate_python({**data, "run_dir": run_dir})
    except ValidationError as exc:
        problems = [
            f"{manifest}: {validation_problem(error, loc=error['loc'] or (RUN_MANIFEST,))}" for error in exc.errors()
        ]
        raise ModelError(
            "\n".join(
                [
                    *problems,
                    f"{manifest}: not a valid run manifest ({len(problems)} problem{'s' * (len(problems) > 1)})",
                ]
            )
        ) from None
    for key in ("adapter_dir", "merged_model"):
        path = getattr(info, key)
        if path is not None and not path.is_absolute():
            setattr(info, key, run_dir / path)
    return info


_RUN_INFO = TypeAdapter(RunInfo)


def read_trainer_log(path: Path) -> list[dict]:
    """LLaMA-Factory's per-step log, the one rule every reader uses: a half-written last line
    (training still running, or killed) is skipped; any other line that is not a JSON object is a
    `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    text = read_text(path)
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not text.endswith("\n"):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError, or an integer too long
                break  # the line being written
        else:
            row = json_line(line, str(path), number, expect=object)
        if isinstance(row, dict):
            rows.append(row)
    return rows


def logged_values(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) of each logged row with a finite number under `key` (loss, eval_loss)."""
    import math

    return [
        (row["current_steps"], row[key])
        for row in rows
        if isinstance(row.get(key), (int, float))
        and not isinstance(row.get(key), bool)
        and math.isfinite(row[key])
        and "current_steps" in row
    ]


class RunFolder:
    """One run folder: the paths of its files and their readers (each file read at most once)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._trainer_log: list[dict] | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    manifest_path = property(lambda self: self.path / RUN_MANIFEST)
    config_path = property(lambda self: self.path / RUN_CONFIG)
    train_yaml = property(lambda self: self.path / LLAMAFACTORY_TRAIN)
    data_dir = property(lambda self: self.path / DATA_DIR)
    trainer_log_path = property(lambda self: self.path / TRAINER_LOG)
    loss_plot = property(lambda self: self.path / LOSS_PLOT)
    eval_root = property(lambda self: self.path / EVAL_DIR)

    def is_run(self) -> bool:
        """Made by `nerft train` (its config or manifest is there)."""
        return self.config_path.is_file() or self.manifest_path.is_file()

    def info(self) -> RunInfo:
        """run.json, validated (`load_run`)."""
        return load_run(self.path)

    def trainer_log(self) -> list[dict]:
        if self._trainer_log is None:
            self._trainer_log = read_trainer_log(self.trainer_log_path)
        return self._trainer_log

    def results_path(self) -> Path | None:
        return next((self.path / name for name in RESULT_FILES if (self.path / name).is_file()), None)

    def settings(self) -> dict[str, Any]:
        """The LLaMA-Factory arguments that ran (`llamafactory_train.yaml`); nerft.yaml's values fill
        what the rendered file lacks; {} for neither."""
        settings: dict[str, Any] = {}
        for path in (self.train_yaml, self.config_path):
            if path.is_file():
                for key, value in flatten_config(read_yaml(path)[0]).items():
                    settings.setdefault(key, value)
        return settings

    def results(self) -> dict:
        """transformers' final metrics ({} when the run has none yet)."""

        path = self.results_path()
        return {} if path is None else read_json(path, what="the trainer's final metrics")

    def weights(self) -> Path | None:
        """The adapter (LoRA) or model (full, freeze) weights file at the top of the run."""
        return next((self.path / name for name in WEIGHT_FILES if (self.path / name).is_file()), None)

    def eval_dir(self, gold: str | os.PathLike) -> Path:
        """Where `nerft eval --run` puts the evaluation on the gold file `gold` (named by its stem)."""
        return self.eval_root / Path(gold).stem

    def eval_reports(self) -> list[tuple[str, Path]]:
        """(name, path) of the run's eval reports: "" for eval/report.json, then eval/<gold name>/report.json."""
        found = [("", self.eval_root / EVAL_REPORT)] if (self.eval_root / EVAL_REPORT).is_file() else []
        found += [(path.parent.name, path) for path in sorted(self.eval_root.glob(f"*/{EVAL_REPORT}"))]
        return found
