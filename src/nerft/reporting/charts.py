"""The report's PNG charts: per-label F1 bars, loss curves, and their comparisons across runs.

matplotlib is imported inside each function, with the Agg backend (no display needed), so
`nerft --help` does not pay for it. Every chart is written atomically.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from nerft.io import write_bytes_atomic

# Fonts with Chinese glyphs, tried in order when a label is not ASCII (a model inventing "公司名").
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing CN",
)
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
DPI = 120


def f1_bar_chart(
    f1_by_label: Mapping[str, float], path: str | os.PathLike, *, title: str, support: Mapping[str, int] | None = None
) -> Path:
    """Horizontal bars, one per label, F1 from 0 to 1 with the value printed at the end; the gold
    mention count beside each label when `support` is given."""
    return grouped_bar_chart({"F1": f1_by_label}, path, title=title, xlabel="F1", support=support)


def grouped_bar_chart(
    series: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str = "F1",
    support: Mapping[str, int] | None = None,
) -> Path:
    """Bars per label, one bar per series (run), values between 0 and 1."""
    plt = _pyplot()
    labels = sorted({label for values in series.values() for label in values})
    with plt.rc_context(_fonts_for([*labels, *series])):
        return _grouped_bars(plt, series, labels, path, title=title, xlabel=xlabel, support=support or {})


def _grouped_bars(plt, series, labels, path, *, title: str, xlabel: str, support: Mapping[str, int]) -> Path:
    count = max(len(series), 1)
    height = 0.8 / count
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * max(len(labels), 1) * max(1, count * 0.7) + 1.4))
    for index, (name, values) in enumerate(series.items()):
        positions = [row + (index - (count - 1) / 2) * height for row in range(len(labels))]
        widths = [values.get(label, 0.0) for label in labels]
        bars = axes.barh(positions, widths, height=height * 0.95, color=COLORS[index % len(COLORS)], label=name)
        for bar, value in zip(bars, widths):
            axes.text(
                min(value, 1.0) + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.3f}", va="center", fontsize=8
            )
    axes.set_yticks(
        range(len(labels)), [f"{label} ({support[label]})" if label in support else label for label in labels]
    )
    axes.invert_yaxis()  # first label on top, as in the table
    axes.set_xlim(0, 1.1)
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    if len(series) > 1:
        axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path, plt)


def loss_chart(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    *,
    title: str,
    eval_curves: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Path:
    """Training loss per step (one line per run); eval loss as markers on the same axes."""
    plt = _pyplot()
    with plt.rc_context(_fonts_for(list(curves))):
        return _loss_lines(plt, curves, eval_curves or {}, path, title=title)


def _loss_lines(plt, curves, eval_curves, path, *, title: str) -> Path:
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    for index, (name, points) in enumerate(curves.items()):
        color = COLORS[index % len(COLORS)]
        if points:
            steps, losses = zip(*points)
            axes.plot(
                steps,
                losses,
                color=color,
                linewidth=1.6,
                marker="o" if len(points) < 30 else None,
                markersize=3,
                label=f"{name} train" if eval_curves.get(name) else name,
            )
        evaluated = eval_curves.get(name) or []
        if evaluated:
            steps, losses = zip(*evaluated)
            axes.plot(steps, losses, color=color, linestyle="--", marker="s", markersize=5, label=f"{name} eval")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(curves) > 1 or any(eval_curves.values()):
        axes.legend(fontsize=8)
    return _save(figure, path, plt)


def confusion_heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    counts: Sequence[Sequence[int | None]],
    path: str | os.PathLike,
    *,
    title: str,
) -> Path:
    """A grid of counts (rows: gold, columns: predicted), darker for more, each count printed;
    a None cell is left blank."""
    plt = _pyplot()
    with plt.rc_context(_fonts_for([*rows, *columns])):
        return _heatmap(plt, rows, columns, counts, path, title=title)


def _heatmap(plt, rows, columns, counts, path, *, title: str) -> Path:
    import numpy as np

    values = np.array([[float("nan") if value is None else value for value in row] for row in counts], dtype=float)
    figure, axes = plt.subplots(figsize=(max(5.0, 0.7 * len(columns) + 2.4), max(3.0, 0.45 * len(rows) + 1.8)))
    peak = max(1.0, float(np.nanmax(values)) if values.size and not np.isnan(values).all() else 1.0)
    axes.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=peak, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        if not np.isnan(value) and value:
            axes.text(
                column,
                row,
                f"{int(value)}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > peak * 0.6 else "#222",
            )
    axes.set_xticks(range(len(columns)), columns, rotation=40, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)
    return _save(figure, path, plt)


def threshold_chart(curve: Sequence[Sequence[float]], best: float, path: str | os.PathLike, *, title: str) -> Path:
    """Precision, recall and F1 (y) of the entities at or above each confidence threshold (x),
    from rows `[threshold, precision, recall, f1]`; the best threshold marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    thresholds = [row[0] for row in curve]
    for index, name in enumerate(("precision", "recall", "F1")):
        axes.plot(thresholds, [row[index + 1] for row in curve], color=COLORS[index], linewidth=1.6, label=name)
    axes.axvline(best, color="#444444", linestyle=":", linewidth=1.2, label=f"best F1 at {best:.2f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("confidence threshold (entities at or above it kept)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path, plt)


def reliability_diagram(calibration: Sequence[Mapping], path: str | os.PathLike, *, title: str) -> Path:
    """Precision (y) of the entities in each confidence bin (x), against the diagonal of a
    calibrated model; each bar's entity count above it."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.0, 5.0))
    width = 1.0 / max(len(calibration), 1)
    for index, row in enumerate(calibration):
        if not row.get("entities"):
            continue
        left = index * width
        axes.bar(left + width / 2, row["precision"], width=width * 0.9, color=COLORS[0], edgecolor="white")
        axes.text(left + width / 2, row["precision"] + 0.01, str(row["entities"]), ha="center", fontsize=7)
    axes.plot([0, 1], [0, 1], color="#444444", linestyle="--", linewidth=1.0, label="calibrated")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.08)
    axes.set_xlabel("confidence")
    axes.set_ylabel("precision (fraction right)")
    axes.set_title(title)
    axes.legend(fontsize=8, loc="upper left")
    return _save(figure, path, plt)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fonts_for(texts: Sequence[str]) -> dict:
    """rc settings that put an installed CJK font first when some text is not ASCII."""
    if all(text.isascii() for text in texts):
        return {}
    import matplotlib
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    chosen = [name for name in CJK_FONTS if name in installed]
    return {"font.sans-serif": chosen + list(matplotlib.rcParams["font.sans-serif"])} if chosen else {}


def _save(figure, path: str | os.PathLike, plt) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # without a CJK font, Chinese labels draw as boxes: still a readable chart, no need for warnings
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return path
