"""The evaluation report a person reads: `report.md` with the per-label table and an F1 bar chart.

It renders the JSON that `nerft eval --report` writes (`nerft.metrics.evaluate.EvalReport.to_dict`):
`{"records", "unparseable", "labels": {label: {precision, recall, f1, support, tp, fp, fn}},
"other_labels": {label: false positives}, "micro": {...}, "macro": {...}, "seqeval": {"micro": {...}, "macro": {...}, ...}, "errors": [...]}`.
"""

from __future__ import annotations

import os
from pathlib import Path

from nerft.errors import DataError
from nerft.io import read_json, write_text_atomic
from nerft.metrics.clue import format_other_labels
from nerft.metrics.confusion import Confusion
from nerft.reporting.charts import confusion_heatmap, f1_bar_chart, reliability_diagram, threshold_chart
from nerft.reporting.page import (
    Block,
    Heading,
    Image,
    Page,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)

CHART_NAME = "f1_by_label.png"
ERRORS_SHOWN = 10


def load_eval_report(path: str | os.PathLike) -> dict:
    """Read a report.json; a `DataError` naming the file when it is not one."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such eval report", hint="write one with `nerft eval ... --report PATH`")
    report = read_json(path, expect=object, what="an eval report")
    check_eval_report(report, source=str(path))
    return report


def check_eval_report(report: object, *, source: str = "eval report") -> None:
    if not isinstance(report, dict) or not isinstance(report.get("labels"), dict):
        raise DataError(f'{source}: not a nerft eval report (no per-label scores under "labels")')


def eval_paths(target: str | os.PathLike) -> tuple[Path, Path]:
    """Where the Markdown page and the chart go for `target`: a folder, a .md path, or the report's
    .json path (`X/report.json` -> `X/report.md` and `X/f1_by_label.png`)."""
    target = Path(target)
    if target.suffix.lower() in (".md", ".json"):
        markdown = target.with_suffix(".md")
        chart = target.parent / (CHART_NAME if target.stem == "report" else f"{target.stem}_{CHART_NAME}")
        return markdown, chart
    return target / "report.md", target / CHART_NAME


def write_eval_report(report: dict, target: str | os.PathLike, *, title: str = "Evaluation") -> list[Path]:
    """Write `report.md`, the same page as `report.html`, and the charts for `report`; return the
    page's paths and the per-label F1 chart's."""

    check_eval_report(report)
    markdown, chart = eval_paths(target)
    page = Page(title).add(*eval_blocks(report, chart))
    write_text_atomic(markdown, render_markdown(page, base_dir=markdown.parent))
    html = markdown.with_suffix(".html")
    write_text_atomic(html, render_html(page, base_dir=html.parent))
    return [markdown, html, chart]


def eval_blocks(report: dict, chart: Path, *, heading_level: int = 2) -> list[Block]:
    """The summary, the per-label table, the chart (drawn to `chart`), span scores and first errors."""
    labels: dict = report["labels"]
    micro = report.get("micro", {})
    f1_bar_chart(
        {label: float(scores.get("f1", 0.0)) for label, scores in labels.items()},
        chart,
        title=f"F1 by label (micro F1 {float(micro.get('f1', 0.0)):.3f}; gold mentions in brackets)",
        support={label: int(scores["support"]) for label, scores in labels.items() if "support" in scores},
    )
    blocks: list[Block] = [Paragraph(summary_line(report))]
    blocks.append(Heading("Per label (CLUE: label and entity text must both match)", heading_level))
    blocks.append(label_table(report))
    if report.get("other_labels"):
        blocks.append(Paragraph(format_other_labels(report["other_labels"]) + "."))
    blocks.append(Image(chart, "F1 by label"))
    in_text = report.get("in_text") or {}
    if in_text.get("micro"):
        blocks.append(
            Paragraph(
                f"{in_text.get('not_in_text', 0)} predicted entities are not in their sentence (counted as wrong above). "
                f"Without them (`nerft predict` drops them by default): {_scores(in_text['micro'], in_text.get('macro', {}))}."
            )
        )
    seqeval = report.get("seqeval") or {}
    if seqeval.get("micro"):
        rows = [
            [name, *(_score(seqeval[name].get(key)) for key in ("precision", "recall", "f1"))]
            for name in ("micro", "macro")
            if seqeval.get(name)
        ]
        blocks.append(Heading("Spans (seqeval: the entity found at its place in the sentence)", heading_level))
        blocks.append(Table(["Average", "Precision", "Recall", "F1"], rows))
    if report.get("confidence"):
        blocks += confidence_blocks(report, chart, heading_level)
    if report.get("confusion"):
        blocks += confusion_blocks(report["confusion"], confusion_chart_path(chart), heading_level)
    errors = report.get("errors") or []
    if errors:
        total = report.get("sentences_with_errors", len(errors))  # errors.jsonl has them all
        blocks.append(Heading(f"First errors ({min(len(errors), ERRORS_SHOWN)} of {total})", heading_level))
        blocks.append(
            Table(
                ["Line", "Text", "Missed", "Wrong"],
                [
                    [
                        str(error.get("line", "")),
                        error.get("text", ""),
                        _mentions(error.get("false_negatives")),
                        "unparseable answer" if error.get("unparseable") else _mentions(error.get("false_positives")),
                    ]
                    for error in errors[:ERRORS_SHOWN]
                ],
                numeric=[True, False, False, False],
            )
        )
    return blocks


def confidence_blocks(report: dict, chart: Path, heading_level: int) -> list[Block]:
    """What confidence buys (report.json's "confidence", `nerft.metrics.confidence`): scores by
    threshold with their curve, and the calibration table with its reliability diagram."""
    data = report["confidence"]
    curve_path = chart.with_name(chart.name.replace(CHART_NAME[:-4], "confidence_threshold", 1))
    diagram_path = chart.with_name(chart.name.replace(CHART_NAME[:-4], "reliability", 1))
    best, high = data["best"], data["high_confidence"]
    threshold_chart(
        data["curve"], best["threshold"], curve_path, title="Entities kept at or above a confidence threshold"
    )
    reliability_diagram(data["calibration"], diagram_path, title=f"Reliability (ECE {data['ece']:.3f})")
    blocks: list[Block] = [
        Heading("Confidence", heading_level),
        Paragraph(
            f"Entities with confidence >= {high['threshold']}: precision {_score(high['precision'])} "
            f"({high['entities']} entities), against {_score(data['all_precision'])} for all "
            f"({data['entities'] + data['unknown']}). The best threshold for F1 is {best['threshold']:.2f} "
            f"(precision {_score(best['precision'])}, recall {_score(best['recall'])}, F1 {_score(best['f1'])})."
            + (
                f" {data['unknown']} entities had no confidence and are kept at every threshold."
                if data["unknown"]
                else ""
            )
        ),
        Table(
            ["Threshold", "Entities", "Precision", "Recall", "F1"],
            [
                [
                    f"{row['threshold']:.2f}",
                    str(row["entities"]),
                    *(_score(row[key]) for key in ("precision", "recall", "f1")),
                ]
                for row in data["thresholds"]
            ],
            numeric=[True] * 5,
        ),
        Image(curve_path, "Precision, recall and F1 by confidence threshold"),
        Heading("Calibration", heading_level + 1),
        Paragraph(
            "A calibrated model is right as often as it is confident: precision equals the mean confidence in each bin. "
            f"Expected calibration error: {data['ece']:.4f}."
        ),
        Table(
            ["Confidence", "Entities", "Mean confidence", "Precision"],
            [
                [row["bin"], str(row["entities"]), _score(row["mean_confidence"]), _score(row["precision"])]
                for row in data["calibration"]
            ],
            numeric=[False, True, True, True],
        ),
        Image(diagram_path, "Reliability diagram"),
    ]
    return blocks


def confusion_chart_path(chart: Path) -> Path:
    """The heatmap beside the F1 chart: f1_by_label.png -> confusion.png, f1_by_label_dev.png -> confusion_dev.png."""
    return chart.with_name(chart.name.replace(CHART_NAME[:-4], "confusion", 1))


def confusion_blocks(data: dict, chart: Path, heading_level: int) -> list[Block]:
    """The confusion table of report.json's "confusion" (`nerft.metrics.confusion`) and its heatmap."""

    table = Confusion(**data)
    rows, columns, counts = table.table()
    confusion_heatmap(rows, columns, counts, chart, title="Gold label x predicted label (CLUE pairs)")
    return [
        Heading("Label confusion (gold rows, predicted columns)", heading_level),
        Paragraph(
            "Same text, other label: off the diagonal. Overlapping text: wrong boundary (by gold label). "
            "Each gold entity is counted once in its row, so a row adds up to the label's support."
        ),
        Table(
            ["gold ↓ predicted →", *columns],
            [[row, *("" if value is None else str(value) for value in values)] for row, values in zip(rows, counts)],
        ),
        Image(chart, "Label confusion heatmap"),
    ]


def summary_line(report: dict) -> str:
    micro, macro = report.get("micro", {}), report.get("macro", {})
    parts = []
    if "records" in report:
        parts.append(f"{report['records']} records")
    if "unparseable" in report:
        parts.append(f"{report['unparseable']} unparseable answers")
    if "sentences_with_errors" in report:
        parts.append(f"{report['sentences_with_errors']} sentences with errors")
    scores = _scores(micro, macro)
    return (", ".join(parts) + ". " if parts else "") + scores[0].upper() + scores[1:] + "."


def _scores(micro: dict, macro: dict) -> str:
    return (
        f"micro F1 {_score(micro.get('f1'))} (precision {_score(micro.get('precision'))}, "
        f"recall {_score(micro.get('recall'))}); macro F1 {_score(macro.get('f1'))}"
    )


def label_table(report: dict) -> Table:
    labels, micro, macro = report["labels"], report.get("micro", {}), report.get("macro", {})
    rows = []
    for label, scores in labels.items():
        rows.append(
            [
                label,
                *(_score(scores.get(key)) for key in ("precision", "recall", "f1")),
                *(_count(scores.get(key)) for key in ("support", "tp", "fp", "fn")),
            ]
        )
    total = micro.get("support", sum(int(scores.get("support", 0)) for scores in labels.values()))
    rows.append(
        ["Micro avg.", *(_score(micro.get(key)) for key in ("precision", "recall", "f1")), _count(total), "", "", ""]
    )
    rows.append(
        ["Macro avg.", *(_score(macro.get(key)) for key in ("precision", "recall", "f1")), _count(total), "", "", ""]
    )
    return Table(["Label", "Precision", "Recall", "F1", "Support", "TP", "FP", "FN"], rows)


def _score(value) -> str:
    return "" if value is None else f"{float(value):.4f}"


def _count(value) -> str:
    return "" if value is None else str(int(value))


def _mentions(pairs) -> str:
    return ", ".join(f"{label}:{text}" for label, text in (pairs or []))
