"""The run folder: what `nerft train` leaves behind, and what every later command reads.

A run folder holds
- `run.json`: the manifest below (machine-readable, written by `nerft train`);
- `nerft.yaml`: nerft's resolved config, the one that ran;
- `llamafactory_train.yaml`: the exact arguments given to `llamafactory-cli train`;
- LLaMA-Factory's own outputs: `adapter_config.json`, `adapter_model.safetensors`,
  `trainer_log.jsonl`, `training_loss.png`, `checkpoint-*/`, ...

Inference reads the prompt format, system prompt, template and base model from `run.json`, so the
prompt at inference is the prompt at training.
"""

from __future__ import annotations

import os
from dataclasses import asdict, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from nerft.errors import ModelError
from nerft.config.schema import known_prompt
from nerft.prompts import CLUENER_LABELS, PromptFormat, get_format

RUN_MANIFEST = "run.json"
RUN_CONFIG = "nerft.yaml"
LLAMAFACTORY_TRAIN = "llamafactory_train.yaml"
EVAL_DIR = "eval"  # `nerft eval --run` writes RUN/eval/<gold name>/report.json; `nerft report` reads it
EVAL_REPORT = "report.json"
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
    from nerft.io import write_json_atomic

    path = Path(info.run_dir) / RUN_MANIFEST
    write_json_atomic(path, info.to_json())
    return path


def update_run(run_dir: str | os.PathLike, **changes) -> RunInfo:
    """Read run.json, change some of its values and write it back, under its lock (two exports of
    one run each keep their change)."""
    from dataclasses import replace

    from nerft.io import locked

    with locked(Path(run_dir) / RUN_MANIFEST):
        info = replace(load_run(run_dir), **changes)
        write_run(info)
    return info


def load_run(run_dir: str | os.PathLike) -> RunInfo:
    """Read and validate a run folder's manifest, or fail with a message that says what is wrong."""
    from nerft.io import read_json

    run_dir = Path(run_dir)
    manifest = run_dir / RUN_MANIFEST
    if not manifest.is_file():
        raise ModelError(f"{run_dir}: not a nerft run folder (no {RUN_MANIFEST})", hint="make one with `nerft train CONFIG --output-dir DIR`")
    data = read_json(manifest, error=ModelError, what="nerft's run manifest")
    version = data.get("schema_version", RUN_SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > RUN_SCHEMA_VERSION:
        raise ModelError(f"{manifest}: schema_version {version} is newer than this nerft reads ({RUN_SCHEMA_VERSION})", hint="upgrade nerft")
    try:
        info = _RUN_INFO.validate_python({**data, "run_dir": run_dir})
    except ValidationError as exc:
        problems = [f"{manifest}: {'.'.join(str(part) for part in error['loc']) or 'run.json'}: {_reason(error)}" for error in exc.errors()]
        raise ModelError("\n".join([*problems, f"{manifest}: not a valid run manifest ({len(problems)} problem{'s' * (len(problems) > 1)})"])) from None
    for key in ("adapter_dir", "merged_model"):
        path = getattr(info, key)
        if path is not None and not path.is_absolute():
            setattr(info, key, run_dir / path)
    return info


def _reason(error: dict) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return "missing (required)"
    if kind == "unexpected_keyword_argument":
        return "unknown key"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if not isinstance(error.get("input"), (dict, list)):
        message += f" (got {error.get('input')!r})"
    return message


_RUN_INFO = TypeAdapter(RunInfo)
