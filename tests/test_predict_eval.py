"""`nerft eval --endpoint/--run`: predict the gold sentences, then score them, with and without the
predicted strings that are not in their sentence."""

import json
import re

import pytest
from test_openai_engine import FakeServer
from typer.testing import CliRunner

from nerft.cli.main import app

GOLD = [
    {
        "text": "孙丽在南京市鼓楼区开了一家书店，最畅销的是《围城》。",
        "label": {"name": {"孙丽": [[0, 1]]}, "address": {"南京市鼓楼区": [[3, 8]]}, "book": {"围城": [[22, 23]]}},
    },
    {"text": "京东宣布与沃尔玛达成战略合作。", "label": {"company": {"京东": [[0, 1]], "沃尔玛": [[5, 7]]}}},
]
ANSWERS = {GOLD[0]["text"]: "name:孙丽\naddress:南京市\nbook:围城", GOLD[1]["text"]: "company:京东\ncompany:阿里巴巴"}


def serve_answers(n, body):
    text = body["messages"][1]["content"]
    message = {"role": "assistant", "content": ANSWERS[text]}
    return 200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


@pytest.fixture
def gold_file(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in GOLD), encoding="utf-8")
    return path


def test_eval_endpoint_reports_both_scores_and_writes_three_files(gold_file, tmp_path):
    out_dir = tmp_path / "eval"
    with FakeServer(behaviour=serve_answers) as server:
        result = CliRunner().invoke(
            app, ["eval", "--endpoint", server.url, "--gold", str(gold_file), "--out-dir", str(out_dir), "--json"]
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # Every named entity: TP 孙丽 围城 京东; FP 南京市 (in the text) and 阿里巴巴 (not); FN 南京市鼓楼区 沃尔玛.
    assert report["micro"] == {"precision": 0.6, "recall": 0.6, "f1": pytest.approx(0.6), "support": 5}
    # Without 阿里巴巴: precision 3/4, recall 3/5, F1 = 2 * 0.75 * 0.6 / 1.35.
    assert report["in_text"]["not_in_text"] == 1
    assert report["in_text"]["micro"] == {
        "precision": 0.75,
        "recall": 0.6,
        "f1": pytest.approx(2 * 0.75 * 0.6 / 1.35),
        "support": 5,
    }
    assert json.loads((out_dir / "report.json").read_text()) == report
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["predict"] for row in rows] == [ANSWERS[g["text"]] for g in GOLD]
    errors = [json.loads(line) for line in (out_dir / "errors.jsonl").read_text().splitlines()]
    assert [e["false_positives"] for e in errors] == [[["address", "南京市"]], [["company", "阿里巴巴"]]]


def test_eval_endpoint_prints_the_table_and_the_score_without_invented_strings(gold_file, tmp_path):
    with FakeServer(behaviour=serve_answers) as server:
        result = CliRunner().invoke(
            app, ["eval", "--endpoint", server.url, "--gold", str(gold_file), "--out-dir", str(tmp_path / "e")]
        )
    assert result.exit_code == 0, result.output
    assert re.search(r"Micro Avg\.\s+0\.6000\s+0\.6000\s+0\.6000\s+5\n", result.output)
    assert (
        "entities not in their sentence: 1; without them: micro F1 0.6667 (precision 0.7500, recall 0.6000)"
        in result.output
    )


def test_eval_endpoint_without_run_needs_an_out_dir(gold_file):
    result = CliRunner().invoke(app, ["eval", "--endpoint", "http://127.0.0.1:9/v1", "--gold", str(gold_file)])
    assert result.exit_code == 1
    assert "nerft: error: --endpoint without --run needs --out-dir" in result.output


def test_eval_refuses_a_predictions_file_and_a_model_together(gold_file, tmp_path):
    result = CliRunner().invoke(
        app, ["eval", "--gold", str(gold_file), "--predictions", str(gold_file), "--endpoint", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert (
        "--predictions scores a file; --run, --endpoint, --engine and --prompt predict: give one or the other"
        in result.output
    )


def test_eval_with_nothing_to_score_says_what_to_give(gold_file):
    result = CliRunner().invoke(app, ["eval", "--gold", str(gold_file)])
    assert result.exit_code == 1
    assert "give --predictions FILE, or --run RUN_DIR / --endpoint URL" in result.output


@pytest.mark.slow
def test_eval_run_with_the_hf_engine_writes_into_the_run_folder(tiny_run, sample_dir, tmp_path, one_thread):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    result = CliRunner().invoke(
        app, ["eval", "--run", str(run_dir), "--engine", "hf", "--gold", str(sample_dir / "dev.jsonl")]
    )
    assert result.exit_code == 0, result.output
    out_dir = run_dir / "eval" / "dev"
    assert {"errors.jsonl", "predictions.jsonl", "report.json"} <= {p.name for p in out_dir.iterdir()}
    report = json.loads((out_dir / "report.json").read_text())
    assert report["records"] == 9 and report["prediction"]["engine"]["engine"] == "hf"
