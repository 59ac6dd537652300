"""What a finished run says about itself, read from LLaMA-Factory's files in the run folder.

- `trainer_log.jsonl`: one JSON object per logging step (`current_steps`, `total_steps`, `loss`,
  `eval_loss`, `lr`, `epoch`, ...), written by LLaMA-Factory's LogCallback;
- `all_results.json` (or `train_results.json`): transformers' final metrics (`train_runtime`,
  `train_samples_per_second`, `train_loss`, `eval_loss`, ...);
- `adapter_model.safetensors` (LoRA) or `model*.safetensors` (full), `training_loss.png`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from nerft.runfolder import RunFolder, logged_values


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
    folder = RunFolder(run_dir)
    summary = TrainSummary(run_dir=folder.path, packed=packed)
    rows = folder.trainer_log()
    for entry in rows:
        summary.steps = entry.get("current_steps", summary.steps)
        summary.total_steps = entry.get("total_steps", summary.total_steps)
        summary.epoch = entry.get("epoch", summary.epoch)
    logged = [loss for _, loss in logged_values(rows, "loss")]
    summary.final_loss = logged[-1] if logged else None
    eval_losses = logged_values(rows, "eval_loss")
    summary.eval_loss = eval_losses[-1][1] if eval_losses else None
    results = folder.results()
    summary.train_loss = results.get("train_loss", summary.train_loss)
    summary.runtime_s = results.get("train_runtime", summary.runtime_s)
    summary.samples_per_second = results.get("train_samples_per_second", summary.samples_per_second)
    summary.eval_loss = results.get("eval_loss", summary.eval_loss)
    summary.epoch = results.get("epoch", summary.epoch)
    if resumed and logged:
        summary.train_loss = sum(logged) / len(logged)
    summary.adapter = folder.weights()
    summary.loss_plot = folder.loss_plot if folder.loss_plot.is_file() else None
    return summary
