"""`nerft report`: one page per training run, and a side-by-side page for several runs.

A run page has the config summary (from `run.json`, `llamafactory_train.yaml`, `nerft.yaml`), the
loss curve (from LLaMA-Factory's `trainer_log.jsonl`), and the evaluation table and chart of each
eval report in the run: `<run>/eval/report.json`, and `<run>/eval/<gold name>/report.json` as
`nerft eval --run` writes them. Each page is written as Markdown and as self-contained HTML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nerft.errors import ModelError
from nerft.io import write_text_atomic
from nerft.reporting.charts import grouped_bar_chart, loss_chart
from nerft.reporting.errors_page import ERRORS_PAGE
from nerft.reporting.eval_report import eval_blocks, load_eval_report, summary_line
from nerft.reporting.page import (
    Block,
    Heading,
    Image,
    Link,
    Page,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from nerft.runfolder import (
    EVAL_DIR,
    EVAL_REPORT,
    LLAMAFACTORY_TRAIN,
    RUN_MANIFEST,
    TRAINER_LOG,
    RunFolder,
    RunInfo,
    logged_values,
)

# The settings a reader compares first, in LLaMA-Factory's names.
SUMMARY_KEYS = (
    "model_name_or_path",
    "template",
    "finetuning_type",
    "lora_rank",
    "lora_alpha",
    "lora_target",
    "quantization_bit",
    "dataset",
    "eval_dataset",
    "cutoff_len",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "bf16",
    "fp16",
    "flash_attn",
)


@dataclass
class RunRecord:
    """What a run folder holds that a report shows."""

    run_dir: Path
    name: str
    manifest: RunInfo | None = None  # run.json (a plain LLaMA-Factory output folder has none)
    settings: dict[str, Any] = field(default_factory=dict)  # LLaMA-Factory arguments that ran
    log: list[dict[str, Any]] = field(default_factory=list)  # trainer_log.jsonl rows
    results: dict[str, Any] = field(default_factory=dict)  # all_results.json
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # "" (eval/report.json) or gold name -> report

    def losses(self) -> list[tuple[float, float]]:
        return logged_values(self.log, "loss")

    def eval_losses(self) -> list[tuple[float, float]]:
        return logged_values(self.log, "eval_loss")

    def setting(self, key: str) -> Any:
        return self.settings.get(key)


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Gather a run folder (nerft's, or a plain LLaMA-Factory output folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: no such run folder")
    names = (RUN_MANIFEST, LLAMAFACTORY_TRAIN, TRAINER_LOG)
    if not any((run_dir / name).is_file() for name in names):
        raise ModelError(
            f"{run_dir}: not a training run folder (none of {', '.join(names)})",
            hint="make one with `nerft train CONFIG`",
        )
    folder = RunFolder(run_dir)
    record = RunRecord(run_dir=run_dir, name=run_dir.resolve().name)
    if folder.manifest_path.is_file():
        record.manifest = folder.info()
    record.settings = folder.settings()
    record.log = folder.trainer_log()
    record.results = folder.results()
    record.evaluations = {name: load_eval_report(path) for name, path in folder.eval_reports()}
    return record


def run_page(record: RunRecord, out_dir: Path) -> Page:
    """The page of one run; its charts are drawn into `out_dir`."""
    page = Page(f"Run {record.name}")
    manifest = record.manifest
    model = (manifest.base_model if manifest else None) or record.setting("model_name_or_path") or "unknown"
    facts = [f"Run folder {record.run_dir}", f"base model {model}"]
    if manifest is not None:
        facts.append(f"prompt format {manifest.prompt}")
        facts.append(f"{len(manifest.labels)} labels")
    page.add(Paragraph(", ".join(facts) + "."))

    page.add(Heading("Config"))
    rows = [[key, _value(record.setting(key))] for key in SUMMARY_KEYS if record.setting(key) not in (None, "")]
    page.add(
        Table(["Setting", "Value"], rows, numeric=[False, False])
        if rows
        else Paragraph("No llamafactory_train.yaml or nerft.yaml in this folder.")
    )

    page.add(Heading("Training"))
    page.add(*training_blocks(record, out_dir / "loss.png"))

    for name, report in record.evaluations.items():
        page.add(Heading(_eval_title(name)))
        page.add(*eval_blocks(report, out_dir / _chart_name("f1_by_label", name), heading_level=3))
        errors_page = record.run_dir / EVAL_DIR / name / ERRORS_PAGE
        if errors_page.is_file():
            page.add(Link(errors_page, f"Every sentence with a mistake, highlighted: {ERRORS_PAGE}"))
    if not record.evaluations:
        page.add(Heading("Evaluation"))
        page.add(
            Paragraph(
                f"No evaluation yet: `nerft eval --run {record.run_dir} --gold FILE` writes {record.run_dir / EVAL_DIR}/<gold name>/{EVAL_REPORT}."
            )
        )
    return page


def training_blocks(record: RunRecord, chart: Path) -> list[Block]:
    losses = record.losses()
    if not losses:
        return [Paragraph(f"No loss logged ({TRAINER_LOG} is missing or empty).")]
    blocks: list[Block] = [Paragraph(training_summary(record))]
    loss_chart(
        {record.name: losses},
        chart,
        title=f"Training loss: {record.name}",
        eval_curves={record.name: record.eval_losses()},
    )
    blocks.append(Image(chart, "Training loss by step"))
    return blocks


def training_summary(record: RunRecord) -> str:
    losses = record.losses()
    last = record.log[-1]
    parts = [f"{last.get('current_steps', len(record.log))} of {last.get('total_steps', '?')} steps"]
    if losses:
        parts.append(f"loss {losses[0][1]:.4f} at step {losses[0][0]} to {losses[-1][1]:.4f} at step {losses[-1][0]}")
    evaluated = record.eval_losses()
    if evaluated:
        parts.append(f"eval loss {evaluated[-1][1]:.4f}")
    if record.results.get("train_runtime") is not None:
        parts.append(f"{float(record.results['train_runtime']):.1f} s of training")
    elif last.get("elapsed_time"):
        parts.append(f"elapsed {last['elapsed_time']}")
    return ", ".join(parts) + "."


def comparison_page(records: list[RunRecord], out_dir: Path) -> Page:
    """Runs side by side: differing settings, loss curves, and per-label F1 against the first run."""
    names = [record.name for record in records]
    page = Page("Comparison: " + " vs ".join(names))
    page.add(Paragraph(f"Differences are measured against the first run, {names[0]}."))

    page.add(Heading("Config differences"))
    keys = [key for key in SUMMARY_KEYS if len({_value(record.setting(key)) for record in records}) > 1]
    if keys:
        page.add(
            Table(
                ["Setting", *names],
                [[key, *(_value(record.setting(key)) for record in records)] for key in keys],
                numeric=[False] * (len(names) + 1),
            )
        )
    else:
        page.add(Paragraph("The summarised settings are the same."))

    page.add(Heading("Training"))
    curves = {record.name: record.losses() for record in records}
    if any(curves.values()):
        page.add(
            Table(
                ["Run", "Summary"],
                [[record.name, training_summary(record) if record.log else "no loss logged"] for record in records],
                numeric=[False, False],
            )
        )
        chart = loss_chart(
            curves,
            out_dir / "loss_comparison.png",
            title="Training loss",
            eval_curves={record.name: record.eval_losses() for record in records},
        )
        page.add(Image(chart, "Training loss of each run"))
    else:
        page.add(Paragraph("No run has a loss log."))

    names = list(dict.fromkeys(name for record in records for name in record.evaluations))
    compared = [name for name in names if sum(name in record.evaluations for record in records) >= 2]
    if not compared:
        page.add(Heading("Evaluation"))
        page.add(Paragraph("Per-label differences need an evaluation of the same gold set in at least two runs."))
    for name in compared:
        evaluated = [(record.name, record.evaluations[name]) for record in records if name in record.evaluations]
        page.add(Heading(_eval_title(name)))
        page.add(
            Table(
                ["Run", "Summary"], [[run, summary_line(report)] for run, report in evaluated], numeric=[False, False]
            )
        )
        page.add(label_difference_table(evaluated))
        series = {
            run: {label: float(scores.get("f1", 0.0)) for label, scores in report["labels"].items()}
            for run, report in evaluated
        }
        chart = grouped_bar_chart(
            series, out_dir / _chart_name("f1_comparison", name), title=f"F1 by label{f': {name}' if name else ''}"
        )
        page.add(Image(chart, "F1 by label for each run"))
    return page


def label_difference_table(evaluated: list[tuple[str, dict]]) -> Table:
    """F1 per label for every (run, report), then each later run's difference from the first (ΔF1 = run − first)."""
    labels = sorted({label for _, report in evaluated for label in report["labels"]})

    def f1(report: dict, label: str) -> float | None:
        scores = report["labels"].get(label)
        return None if scores is None else float(scores.get("f1", 0.0))

    header = ["Label", *(f"F1 {run}" for run, _ in evaluated), *(f"ΔF1 {run}" for run, _ in evaluated[1:])]
    rows = []
    for label in labels:
        values = [f1(report, label) for _, report in evaluated]
        deltas = [_delta(value, values[0]) for value in values[1:]]
        rows.append([label, *(_f(value) for value in values), *deltas])
    micros = [float(report.get("micro", {}).get("f1", 0.0)) for _, report in evaluated]
    rows.append(["Micro avg.", *(_f(value) for value in micros), *(_delta(value, micros[0]) for value in micros[1:])])
    return Table(header, rows)


@dataclass
class WrittenReport:
    pages: list[Path] = field(default_factory=list)  # .md and .html files
    charts: list[Path] = field(default_factory=list)


def write_run_reports(run_dirs: list[str | os.PathLike], *, out: str | os.PathLike | None = None) -> WrittenReport:
    """Write one page per run and, for several runs, the comparison page.

    One run: pages in `out` (default `<run>/report/`). Several: `out/<run name>/` for each run and
    `out/comparison.{md,html}` (default `out`: `reports/`).
    """
    if not run_dirs:
        raise ModelError("no run folder given")
    records = [read_run(run_dir) for run_dir in run_dirs]
    _unique_names(records)
    written = WrittenReport()
    if len(records) == 1:
        out_dir = Path(out) if out is not None else records[0].run_dir / "report"
        _write_page(run_page(records[0], out_dir), out_dir, "report", written)
        return written
    out_dir = Path(out) if out is not None else Path("reports")
    for record in records:
        _write_page(run_page(record, out_dir / record.name), out_dir / record.name, "report", written)
    _write_page(comparison_page(records, out_dir), out_dir, "comparison", written)
    return written


def _write_page(page: Page, out_dir: Path, stem: str, written: WrittenReport) -> None:

    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, html = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    write_text_atomic(markdown, render_markdown(page, base_dir=out_dir))
    write_text_atomic(html, render_html(page, base_dir=out_dir))
    written.pages += [markdown, html]
    written.charts += [block.path for block in page.blocks if isinstance(block, Image)]


def _unique_names(records: list[RunRecord]) -> None:
    """Runs with the same folder name become NAME, NAME-2, ...: never a name another run has."""
    taken = {record.name for record in records}
    used: set[str] = set()
    for record in records:
        name, number = record.name, 1
        while name in used or (number > 1 and name in taken):
            number += 1
            name = f"{record.name}-{number}"
        used.add(name)
        record.name = name


def _eval_title(name: str) -> str:
    return f"Evaluation: {name}" if name else "Evaluation"


def _chart_name(stem: str, name: str) -> str:
    return f"{stem}_{name}.png" if name else f"{stem}.png"


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "–"
    return f"{value - base:+.4f}"
