"""What a finished run says about itself, read from LLaMA-Factory's files in the run folder.

- `trainer_log.jsonl`: one JSON object per logging step (`current_steps`, `total_steps`, `loss`,
  `eval_loss`, `lr`, `epoch`, ...), written by LLaMA-Factory's LogCallback;
- `all_results.json` (or `train_results.json`): transformers' final metrics (`train_runtime`,
  `train_samples_per_second`, `train_loss`, `eval_loss`, ...);
- `adapter_model.safetensors` (LoRA) or `model*.safetensors` (full), `training_loss.png`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

TRAINER_LOG = "trainer_log.jsonl"
RESULT_FILES = ("all_results.json", "train_results.json")
LOSS_PLOT = "training_loss.png"


@dataclass
class TrainSummary:
    run_dir: Path
    steps: int | None = None
    total_steps: int | None = None
    final_loss: float | None = None  # loss of the last logging step
    train_loss: float | None = None  # mean over the run: the trainer's, or of the logged losses after a resume
    eval_loss: float | None = None
    epoch: float | None = None
    runtime_s: float | None = None
    samples_per_second: float | None = None
    adapter: Path | None = None
    loss_plot: Path | None = None
    packed: bool = False  # LLaMA-Factory's "samples" are then packs of several examples

    def to_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}

    def format(self, extra_lines: list[str] | tuple[str, ...] = ()) -> str:
        def number(value, spec):
            return "-" if value is None else format(value, spec)

        steps = "-" if self.steps is None else f"{self.steps}" + (f"/{self.total_steps}" if self.total_steps else "")
        lines = [
            f"run          {self.run_dir}",
            f"steps        {steps} (epoch {number(self.epoch, '.2f')})",
            f"final loss   {number(self.final_loss, '.4f')} (mean {number(self.train_loss, '.4f')})",
        ]
        if self.eval_loss is not None:
            lines.append(f"eval loss    {self.eval_loss:.4f}")
        lines += [
            f"runtime      {_duration(self.runtime_s)}",
            f"samples/s    {number(self.samples_per_second, '.3f')}" + (" (packed sequences)" if self.packed else ""),
            # a LoRA run saves adapter_model.*, a full or freeze fine-tune the whole model.*
            f"{'model  ' if self.adapter and not self.adapter.name.startswith('adapter') else 'adapter'}      {self.adapter or '- (not found)'}",
            f"loss plot    {self.loss_plot or '- (not found)'}",
            *extra_lines,
        ]
        return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:05.2f} ({seconds:.1f} s)"


def read_summary(run_dir: str | Path, *, packed: bool = False, resumed: bool = False) -> TrainSummary:
    """The summary of a finished run. After a resume the trainer's `train_loss` is the loss of the
    resumed steps divided by all steps (transformers counts only what it ran), so the mean is then
    taken over the logged losses instead."""
    run_dir = Path(run_dir)
    summary = TrainSummary(run_dir=run_dir, packed=packed)
    logged: list[float] = []
    log = run_dir / TRAINER_LOG
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            summary.steps = entry.get("current_steps", summary.steps)
            summary.total_steps = entry.get("total_steps", summary.total_steps)
            summary.epoch = entry.get("epoch", summary.epoch)
            if _finite(entry.get("loss")):
                summary.final_loss = entry["loss"]
                logged.append(entry["loss"])
            if _finite(entry.get("eval_loss")):
                summary.eval_loss = entry["eval_loss"]
    for name in RESULT_FILES:
        path = run_dir / name
        if path.is_file():
            results = json.loads(path.read_text(encoding="utf-8"))
            summary.train_loss = results.get("train_loss", summary.train_loss)
            summary.runtime_s = results.get("train_runtime", summary.runtime_s)
            summary.samples_per_second = results.get("train_samples_per_second", summary.samples_per_second)
            summary.eval_loss = results.get("eval_loss", summary.eval_loss)
            summary.epoch = results.get("epoch", summary.epoch)
            break
    if resumed and logged:
        summary.train_loss = sum(logged) / len(logged)
    for weights in ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json"):
        if (run_dir / weights).is_file():
            summary.adapter = run_dir / weights
            break
    if (run_dir / LOSS_PLOT).is_file():
        summary.loss_plot = run_dir / LOSS_PLOT
    return summary


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
