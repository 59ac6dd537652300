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

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nerft.errors import ModelError
from nerft.prompts import CLUENER_LABELS, PromptFormat, get_format

RUN_MANIFEST = "run.json"
RUN_CONFIG = "nerft.yaml"
LLAMAFACTORY_TRAIN = "llamafactory_train.yaml"
EVAL_DIR = "eval"  # `nerft eval --run` writes RUN/eval/<gold name>/report.json; `nerft report` reads it
EVAL_REPORT = "report.json"


@dataclass
class RunInfo:
    """Everything inference needs to know about a trained run."""

    run_dir: Path
    base_model: str  # model_name_or_path given to LLaMA-Factory (a local folder or a hub id)
    template: str  # LLaMA-Factory chat template, e.g. "qwen"
    finetuning_type: str = "lora"  # lora | full | freeze
    prompt: str = "compact"  # nerft prompt format
    labels: list[str] = field(default_factory=lambda: list(CLUENER_LABELS))
    adapter_dir: Path | None = None  # folder with adapter_config.json; None for full fine-tuning
    quantization_bit: int | None = None
    merged_model: Path | None = None  # set by `nerft export`
    cutoff_len: int | None = None

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


def load_run(run_dir: str | os.PathLike) -> RunInfo:
    """Read a run folder's manifest, or fail with a message that says how to make one."""
    run_dir = Path(run_dir)
    manifest = run_dir / RUN_MANIFEST
    if not manifest.is_file():
        raise ModelError(f"{run_dir}: not a nerft run folder (no {RUN_MANIFEST})", hint="make one with `nerft train CONFIG --output-dir DIR`")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{manifest}:{exc.lineno}: broken JSON ({exc.msg})") from None
    for key in ("adapter_dir", "merged_model"):
        if data.get(key):
            path = Path(data[key])
            data[key] = path if path.is_absolute() else run_dir / path
    known = set(RunInfo.__dataclass_fields__) - {"run_dir"}
    unknown = set(data) - known
    if unknown:
        raise ModelError(f"{manifest}: unknown keys {sorted(unknown)}")
    return RunInfo(run_dir=run_dir, **data)
