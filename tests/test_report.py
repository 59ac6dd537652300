"""Reports: the eval page and chart, run pages with loss curves, and the side-by-side comparison."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import DataError, ModelError
from nerft.reporting import write_eval_report, write_run_reports
from nerft.reporting.eval_report import eval_paths
from nerft.reporting.page import (
    Heading,
    Image,
    Page,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from nerft.reporting.run_report import read_run
from nerft.runfolder import RunInfo, read_trainer_log, write_run

BAR_BLUE = (0x4C, 0x72, 0xB0)  # the first series colour in nerft.reporting.charts
BAR_ORANGE = (0xDD, 0x84, 0x52)


def eval_report(f1s: dict[str, float], micro_f1: float) -> dict:
    """An eval report shaped like `nerft eval --report` writes, with simple counts."""
    return {
        "records": 20,
        "unparseable": 1,
        "labels": {
            label: {
                "precision": f1,
                "recall": f1,
                "f1": f1,
                "support": 10,
                "tp": int(10 * f1),
                "fp": 1,
                "fn": 10 - int(10 * f1),
            }
            for label, f1 in f1s.items()
        },
        "micro": {"precision": micro_f1, "recall": micro_f1, "f1": micro_f1, "support": 10 * len(f1s)},
        "macro": {"precision": 0.5, "recall": 0.5, "f1": 0.5},
        "seqeval": {
            "micro": {"precision": 0.6, "recall": 0.55, "f1": 0.574},
            "macro": {"precision": 0.5, "recall": 0.5, "f1": 0.5},
        },
        "sentences_with_errors": 2,
        "errors": [
            {
                "index": 0,
                "line": 3,
                "text": "叶老桂在浙商银行",
                "predict": "company:浙商银行",
                "unparseable": False,
                "false_positives": [],
                "false_negatives": [["name", "叶老桂"]],
            },
            {
                "index": 4,
                "line": 7,
                "text": "a | <b>",
                "predict": "??",
                "unparseable": True,
                "false_positives": [],
                "false_negatives": [],
            },
        ],
    }


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def has_colour(path: Path, rgb: tuple[int, int, int], *, at_least: int = 200) -> bool:
    """At least `at_least` pixels of this colour: the bars or the line were really drawn."""
    import matplotlib.image
    import numpy

    pixels = (matplotlib.image.imread(path)[..., :3] * 255).round().astype(int)
    return int(numpy.all(numpy.abs(pixels - numpy.array(rgb)) <= 2, axis=-1).sum()) >= at_least


# --- the eval report --------------------------------------------------------------------------------


def test_eval_report_writes_the_table_and_a_real_chart(tmp_path):
    report = eval_report({"name": 0.8, "address": 0.25}, micro_f1=0.6)
    (tmp_path / "report.json").write_text(json.dumps(report))
    markdown, html, chart = write_eval_report(report, tmp_path / "report.json")
    assert (markdown, html, chart) == (tmp_path / "report.md", tmp_path / "report.html", tmp_path / "f1_by_label.png")
    assert "F1 by label" in html.read_text(encoding="utf-8")
    text = markdown.read_text(encoding="utf-8")
    assert (
        "20 records, 1 unparseable answers, 2 sentences with errors. Micro F1 0.6000 (precision 0.6000, recall 0.6000); macro F1 0.5000."
        in text
    )
    assert "| Label | Precision | Recall | F1 | Support | TP | FP | FN |" in text
    assert "| name | 0.8000 | 0.8000 | 0.8000 | 10 | 8 | 1 | 2 |" in text
    assert "| address | 0.2500 | 0.2500 | 0.2500 | 10 | 2 | 1 | 8 |" in text
    assert "| Micro avg. | 0.6000 | 0.6000 | 0.6000 | 20 |  |  |  |" in text
    assert "| micro | 0.6000 | 0.5500 | 0.5740 |" in text
    assert "| 3 | 叶老桂在浙商银行 | name:叶老桂 |  |" in text
    assert "| 7 | a \\| <b> |  | unparseable answer |" in text
    assert "![F1 by label](f1_by_label.png)" in text
    width, height = png_size(chart)
    assert width == 900 and height > 150  # 7.5 inches at 120 dpi
    assert has_colour(chart, BAR_BLUE)


@pytest.mark.parametrize(
    "target, expected",
    [
        ("out", ("out/report.md", "out/f1_by_label.png")),
        ("out/report.json", ("out/report.md", "out/f1_by_label.png")),
        ("out/test.json", ("out/test.md", "out/test_f1_by_label.png")),
        ("out/summary.md", ("out/summary.md", "out/summary_f1_by_label.png")),
    ],
)
def test_eval_report_paths(target, expected):
    assert eval_paths(target) == tuple(Path(path) for path in expected)


def test_eval_report_refuses_something_else():
    with pytest.raises(DataError, match="not a nerft eval report"):
        write_eval_report({"accuracy": 0.9}, "out")


def test_chinese_labels_still_draw(tmp_path):
    markdown, _, chart = write_eval_report(eval_report({"公司名": 0.5, "name": 0.9}, 0.7), tmp_path)
    assert has_colour(chart, BAR_BLUE)
    assert "| 公司名 | 0.5000 |" in markdown.read_text(encoding="utf-8")


# --- pages -------------------------------------------------------------------------------------------


def test_html_is_escaped_and_self_contained(tmp_path):
    image = tmp_path / "chart.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = Page("Run <x> & y").add(
        Heading("A <b>"), Paragraph('5 < 6 & "q"'), Table(["k", "v"], [["<script>", "1"]]), Image(image, 'alt "x"')
    )
    html = render_html(page)
    assert "<title>Run &lt;x&gt; &amp; y</title>" in html
    assert "<h2>A &lt;b&gt;</h2>" in html and "<p>5 &lt; 6 &amp; &quot;q&quot;</p>" in html
    assert "<td>&lt;script&gt;</td>" in html and "<script>" not in html
    assert 'src="data:image/png;base64,iVBORw0KGgpmYWtl"' in html and 'alt="alt &quot;x&quot;"' in html
    markdown = render_markdown(page, base_dir=tmp_path)
    assert markdown.splitlines()[0] == "# Run <x> & y"
    assert '![alt "x"](chart.png)' in markdown


# --- run folders ----------------------------------------------------------------------------------------

LOSSES = [2.5, 1.9, 1.4, 1.1, 0.9, 0.8]


def make_run(
    root: Path, name: str, *, f1s: dict[str, float] | None, learning_rate: float = 1e-4, losses=LOSSES
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    write_run(RunInfo(run_dir=run, base_model="Qwen/Qwen2.5-7B-Instruct", template="qwen", adapter_dir=Path(".")))
    (run / "llamafactory_train.yaml").write_text(
        f"model_name_or_path: Qwen/Qwen2.5-7B-Instruct\nfinetuning_type: lora\nlora_rank: 8\nlearning_rate: {learning_rate}\n"
        "cutoff_len: 512\nper_device_train_batch_size: 4\nbf16: true\n"
    )
    (run / "nerft.yaml").write_text("data:\n  prompt: compact\ntrain:\n  num_train_epochs: 3\n")
    rows = [
        {
            "current_steps": 5 * (index + 1),
            "total_steps": 30,
            "loss": loss,
            "lr": learning_rate,
            "epoch": index / 2,
            "percentage": 100 * (index + 1) / 6,
            "elapsed_time": "0:00:10",
            "remaining_time": "0:00:01",
        }
        for index, loss in enumerate(losses)
    ]
    rows.insert(3, {"current_steps": 15, "total_steps": 30, "eval_loss": 1.6})
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run / "all_results.json").write_text(json.dumps({"train_runtime": 12.5, "train_loss": 1.4}))
    if f1s is not None:
        (run / "eval").mkdir()
        (run / "eval" / "report.json").write_text(json.dumps(eval_report(f1s, micro_f1=sum(f1s.values()) / len(f1s))))
    return run


def test_one_run_page_has_config_loss_curve_and_eval(tmp_path):
    run = make_run(tmp_path, "lora-r8", f1s={"name": 0.8, "address": 0.4})
    written = write_run_reports([run])
    out = run / "report"
    assert written.pages == [out / "report.md", out / "report.html"]
    assert written.charts == [out / "loss.png", out / "f1_by_label.png"]
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# Run lora-r8\n")
    assert "base model Qwen/Qwen2.5-7B-Instruct, prompt format compact, 10 labels." in text
    assert "| learning_rate | 0.0001 |" in text and "| num_train_epochs | 3 |" in text  # from nerft.yaml
    assert "30 of 30 steps, loss 2.5000 at step 5 to 0.8000 at step 30, eval loss 1.6000, 12.5 s of training." in text
    assert "![Training loss by step](loss.png)" in text
    assert "| name | 0.8000 | 0.8000 | 0.8000 | 10 | 8 | 1 | 2 |" in text
    assert png_size(out / "loss.png") == (900, 504)  # 7.5 x 4.2 inches at 120 dpi
    assert has_colour(out / "loss.png", BAR_BLUE, at_least=100)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2 and 'src="loss.png"' not in html


def test_a_run_without_evaluation_says_how_to_make_one(tmp_path):
    run = make_run(tmp_path, "fresh", f1s=None)
    written = write_run_reports([run], out=tmp_path / "pages")
    assert written.charts == [tmp_path / "pages" / "loss.png"]
    text = (tmp_path / "pages" / "report.md").read_text(encoding="utf-8")
    assert (
        f"No evaluation yet: `nerft eval --run {run} --gold FILE` writes {run / 'eval'}/<gold name>/report.json."
        in text
    )


def test_each_gold_set_evaluated_by_nerft_eval_run_gets_its_section(tmp_path):
    # `nerft eval --run RUN --gold dev.jsonl` writes RUN/eval/dev/report.json
    first = make_run(tmp_path, "a", f1s=None)
    second = make_run(tmp_path, "b", f1s={"name": 0.5})
    for run, f1 in ((first, 0.25), (second, 0.75)):
        (run / "eval" / "dev").mkdir(parents=True, exist_ok=True)
        (run / "eval" / "dev" / "report.json").write_text(json.dumps(eval_report({"name": f1}, micro_f1=f1)))
    written = write_run_reports([first, second], out=tmp_path / "out")
    page = (tmp_path / "out" / "b" / "report.md").read_text(encoding="utf-8")
    assert page.index("## Evaluation\n") < page.index("## Evaluation: dev\n")
    assert "![F1 by label](f1_by_label_dev.png)" in page
    comparison = (tmp_path / "out" / "comparison.md").read_text(encoding="utf-8")
    assert "## Evaluation: dev" in comparison and "| name | 0.2500 | 0.7500 | +0.5000 |" in comparison
    assert "## Evaluation\n" not in comparison  # eval/report.json exists in one run only
    assert tmp_path / "out" / "f1_comparison_dev.png" in written.charts


def test_two_runs_side_by_side_with_per_label_differences(tmp_path):
    first = make_run(tmp_path, "a", f1s={"name": 0.8, "address": 0.4, "game": 0.5})
    second = make_run(
        tmp_path,
        "b",
        f1s={"name": 0.7, "address": 0.65, "book": 0.3},
        learning_rate=2e-4,
        losses=[2.4, 1.5, 1.0, 0.7, 0.5, 0.45],
    )
    written = write_run_reports([first, second], out=tmp_path / "cmp")
    out = tmp_path / "cmp"
    assert out / "a" / "report.md" in written.pages and out / "b" / "report.html" in written.pages
    assert written.pages[-2:] == [out / "comparison.md", out / "comparison.html"]
    text = (out / "comparison.md").read_text(encoding="utf-8")
    assert text.startswith("# Comparison: a vs b\n")
    assert "| learning_rate | 0.0001 | 0.0002 |" in text
    assert "| lora_rank |" not in text  # only settings that differ
    # ΔF1 = b - a, by hand: name 0.7-0.8, address 0.65-0.4; book and game exist in one run only
    assert "| Label | F1 a | F1 b | ΔF1 b |" in text
    assert "| address | 0.4000 | 0.6500 | +0.2500 |" in text
    assert "| book | – | 0.3000 | – |" in text
    assert "| game | 0.5000 | – | – |" in text
    assert "| name | 0.8000 | 0.7000 | -0.1000 |" in text
    # micro F1 of each fake report is the mean of its labels: (0.8+0.4+0.5)/3 and (0.7+0.65+0.3)/3
    assert "| Micro avg. | 0.5667 | 0.5500 | -0.0167 |" in text
    assert has_colour(out / "f1_comparison.png", BAR_BLUE) and has_colour(out / "f1_comparison.png", BAR_ORANGE)
    assert has_colour(out / "loss_comparison.png", BAR_ORANGE, at_least=100)


def test_runs_with_the_same_folder_name_get_distinct_pages(tmp_path):
    first = make_run(tmp_path / "x", "run", f1s=None)
    second = make_run(tmp_path / "y", "run", f1s=None)
    written = write_run_reports([first, second], out=tmp_path / "out")
    assert tmp_path / "out" / "run" / "report.md" in written.pages
    assert tmp_path / "out" / "run-2" / "report.md" in written.pages


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ModelError, match="not a training run folder"):
        read_run(tmp_path)
    with pytest.raises(ModelError, match="no such run folder"):
        read_run(tmp_path / "absent")


def test_trainer_log_errors_name_file_and_line_but_a_half_written_last_line_is_skipped(tmp_path):
    log = tmp_path / "trainer_log.jsonl"
    log.write_text('{"current_steps": 1, "loss": 2.0}\n{"current_steps": 2, "lo')
    assert read_trainer_log(log) == [{"current_steps": 1, "loss": 2.0}]
    log.write_text('{"current_steps": 1, "loss": 2.0}\nnot json\n{"current_steps": 3, "loss": 1.0}\n')
    with pytest.raises(DataError, match=r"trainer_log.jsonl:2: broken JSON"):
        read_trainer_log(log)


# --- the command ------------------------------------------------------------------------------------------


def test_nerft_report_prints_the_written_files(tmp_path):
    run = make_run(tmp_path, "r", f1s={"name": 0.9})
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(tmp_path / "o" / name) for name in ("report.md", "report.html", "loss.png", "f1_by_label.png")
    ]


def test_nerft_report_on_a_non_run_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"nerft: error: {tmp_path}: not a training run folder (none of run.json, llamafactory_train.yaml, trainer_log.jsonl) "
        "(make one with `nerft train CONFIG`)"
    ]
    assert not (tmp_path / "report").exists()


def test_nerft_report_json(tmp_path):
    first, second = make_run(tmp_path, "a", f1s={"name": 0.9}), make_run(tmp_path, "b", f1s={"name": 0.7})
    result = CliRunner().invoke(app, ["report", str(first), str(second), "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pages"][-1] == str(tmp_path / "o" / "comparison.html")
    assert all(Path(path).is_file() for path in data["pages"] + data["charts"])
    assert len(data["charts"]) == 6  # loss + F1 per run, and the two comparison charts


def test_runs_with_the_same_name_get_names_no_other_run_has():
    from nerft.reporting.run_report import RunRecord, _unique_names

    records = [RunRecord(run_dir=Path(f"/r/{i}"), name=name) for i, name in enumerate(["run", "run", "run-2", "run"])]
    _unique_names(records)
    # the second "run" cannot take run-2 (a real run's name): run-3; the fourth then run-4
    assert [record.name for record in records] == ["run", "run-3", "run-2", "run-4"]


def test_an_eval_report_that_is_not_one_is_a_one_line_error(tmp_path):
    from nerft.reporting.eval_report import load_eval_report

    with pytest.raises(DataError, match="absent.json: no such eval report"):
        load_eval_report(tmp_path / "absent.json")
    (tmp_path / "latin1.json").write_bytes(b'{"labels": "caf\xe9"}')
    with pytest.raises(DataError, match=r"latin1\.json:1: not UTF-8 text \(an eval report\) \(byte 15\)$"):
        load_eval_report(tmp_path / "latin1.json")
    (tmp_path / "broken.json").write_text('{"labels":\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json:2: broken JSON"):
        load_eval_report(tmp_path / "broken.json")


def test_a_run_page_has_the_confusion_table_its_heatmap_and_a_link_to_errors_html(tmp_path):
    run = make_run(tmp_path, "a", f1s=None)
    report = eval_report({"name": 0.5, "company": 1.0}, micro_f1=0.7)
    report["confusion"] = {
        "matrix": {"company": {"company": 3}, "name": {"name": 2, "company": 1}},
        "boundary": {"name": {"name": 1}},
        "missed": {"name": 4},
        "spurious": {"company": 2},
    }
    (run / "eval" / "dev").mkdir(parents=True)
    (run / "eval" / "dev" / "report.json").write_text(json.dumps(report))
    (run / "eval" / "dev" / "errors.html").write_text("<html></html>")
    written = write_run_reports([run])
    out = run / "report"
    page = (out / "report.md").read_text(encoding="utf-8")
    assert "| gold ↓ predicted → | company | name | wrong boundary | missed |" in page
    # name: 2 right, 1 as company, 1 boundary, 4 missed = its 8 gold entities
    assert (
        "| name | 1 | 2 | 1 | 4 |" in page
        and "| company | 3 | 0 | 0 | 0 |" in page
        and "| spurious | 2 | 0 |  |  |" in page
    )
    assert "![Label confusion heatmap](confusion_dev.png)" in page
    assert "[Every sentence with a mistake, highlighted: errors.html](../eval/dev/errors.html)" in page
    assert '<a href="../eval/dev/errors.html">' in (out / "report.html").read_text(encoding="utf-8")
    assert out / "confusion_dev.png" in written.charts and png_size(out / "confusion_dev.png")[0] > 400
