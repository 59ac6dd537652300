"""What confidence buys: scores by threshold, calibration, --min-confidence, `nerft select`,
and confidences carried into Label Studio and doccano files. Counts are worked out by hand."""

import json
import math

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.records import CluenerRecord
from nerft.inference.engines import Generation
from nerft.inference.predictions import prediction_row
from nerft.inference.select import LeastConfident
from nerft.metrics.confidence import ConfidenceTally, row_confidences
from nerft.prompts import get_format

COMPACT = get_format("compact")


@pytest.fixture
def tally():
    tally = ConfidenceTally()
    # sentence 1: gold A (name), B (organization); predicted A 0.95 (right), C 0.35 (wrong)
    tally.add([("name", "A"), ("organization", "B")], {("name", "A"): 0.95, ("organization", "C"): 0.35})
    # sentence 2: gold D; predicted D 0.62 (right), E 0.05 (wrong)
    tally.add([("address", "D")], {("address", "D"): 0.62, ("name", "E"): 0.05})
    return tally


def test_scores_by_threshold(tally):
    assert tally.at(0.0) == {"threshold": 0.0, "entities": 4, "precision": 0.5, "recall": 0.6667, "f1": 0.5714}
    assert tally.at(0.5) == {"threshold": 0.5, "entities": 2, "precision": 1.0, "recall": 0.6667, "f1": 0.8}
    assert tally.at(0.9) == {"threshold": 0.9, "entities": 1, "precision": 1.0, "recall": 0.3333, "f1": 0.5}
    assert tally.at(0.35)["entities"] == 3  # at or above: 0.35 itself is kept
    assert tally.at(0.36)["entities"] == 2


def test_best_threshold_calibration_and_ece(tally):
    report = tally.report()
    # F1 0.8 from 0.36 (C at 0.35 left out) to 0.62 (D kept): the lowest such threshold
    assert report["best"] == {"threshold": 0.36, "entities": 2, "precision": 1.0, "recall": 0.6667, "f1": 0.8}
    assert report["high_confidence"] == {"threshold": 0.9, "precision": 1.0, "entities": 1}
    assert report["all_precision"] == 0.5
    rows = {row["bin"]: row for row in report["calibration"] if row["entities"]}
    assert rows == {
        "0.0-0.1": {"bin": "0.0-0.1", "entities": 1, "mean_confidence": 0.05, "precision": 0.0},
        "0.3-0.4": {"bin": "0.3-0.4", "entities": 1, "mean_confidence": 0.35, "precision": 0.0},
        "0.6-0.7": {"bin": "0.6-0.7", "entities": 1, "mean_confidence": 0.62, "precision": 1.0},
        "0.9-1.0": {"bin": "0.9-1.0", "entities": 1, "mean_confidence": 0.95, "precision": 1.0},
    }
    assert report["ece"] == pytest.approx((0.05 + 0.35 + 0.38 + 0.05) / 4, abs=1e-4)
    assert len(report["curve"]) == 100


def test_entities_without_a_confidence_stay_at_every_threshold():
    tally = ConfidenceTally()
    tally.add([("name", "A")], {("name", "A"): None, ("name", "B"): 0.2})
    assert tally.at(0.5) == {"threshold": 0.5, "entities": 1, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert tally.report()["unknown"] == 1
    assert ConfidenceTally().report() is None


def test_row_confidences_read_a_predict_row_and_refuse_other_shapes():
    row = {"entities": [{"label": "name", "text": "A", "confidence": 0.5}, {"label": "name", "text": "B"}]}
    assert row_confidences(row) == {("name", "A"): 0.5, ("name", "B"): None}
    assert row_confidences({"predict": "name:A"}) is None
    assert row_confidences({"entities": [{"label": "name", "text": "A", "confidence": 7}]}) == {("name", "A"): None}


GOLD = [
    {"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}, "address": {"北京": [[3, 4]]}}},
    {"text": "李四去上海", "label": {"name": {"李四": [[0, 1]]}}},
]


def rows_for(tmp_path, *, confident: bool = True):
    """Predictions with hand-set token log-probabilities: 张三 sure, 北京 fairly, 上海 (wrong) unsure."""
    records = [CluenerRecord(text=g["text"], labelled=False) for g in GOLD]
    answers = [
        (
            (b"name:", -0.01),
            ("张三".encode(), -0.01),
            (b"\n", -0.01),
            (b"address:", -0.2),
            ("北京".encode(), -0.1),
            (b"", -0.1),
        ),
        ((b"address:", -0.5), ("上海".encode(), -1.0), (b"", -0.2)),
    ]
    rows = []
    for record, tokens in zip(records, answers):
        text = b"".join(data for data, _ in tokens).decode()
        rows.append(prediction_row(record, Generation(text, "stop", tokens if confident else None), fmt=COMPACT))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in GOLD), encoding="utf-8")
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return gold, predictions, rows


def test_eval_reports_confidence_tables_and_min_confidence_drops_the_unsure(tmp_path):
    gold, predictions, rows = rows_for(tmp_path)
    assert [e["confidence"] for e in rows[0]["entities"]] == [round(math.exp(-0.03), 6), round(math.exp(-0.4), 6)]
    assert rows[1]["entities"][0]["confidence"] == round(math.exp(-1.7), 6)  # 上海: 0.18
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["eval", "--gold", str(gold), "--predictions", str(predictions), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["micro"]["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3), abs=1e-4)
    confidence = data["confidence"]
    assert confidence["high_confidence"] == {"threshold": 0.9, "precision": 1.0, "entities": 1}
    assert confidence["best"]["f1"] == 0.8 and confidence["best"]["threshold"] == 0.19  # 上海 (0.1827) left out
    assert "best threshold 0.19" in result.stdout
    assert "confidence: entities >= 0.9: precision 1.0000 (1 entities), all:" in result.stdout
    html = (tmp_path / "report.html").read_text()
    assert "Reliability diagram" in html and (tmp_path / "confidence_threshold.png").is_file()
    assert (tmp_path / "reliability.png").is_file()

    result = CliRunner().invoke(
        app, ["eval", "--gold", str(gold), "--predictions", str(predictions), "--min-confidence", "0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["below_min_confidence"], data["micro"]["precision"], data["micro"]["recall"]) == (
        1,
        1.0,
        pytest.approx(2 / 3),
    )


def test_predict_rows_move_entities_below_min_confidence_to_uncertain():
    record = CluenerRecord(text="李四去上海", labelled=False)
    tokens = (
        (b"name:", -0.01),
        ("李四".encode(), -0.01),
        (b"\n", -0.01),
        (b"address:", -0.5),
        ("上海".encode(), -1.0),
        (b"", -0.2),
    )
    row = prediction_row(record, Generation("name:李四\naddress:上海", "stop", tokens), fmt=COMPACT, min_confidence=0.5)
    assert [e["text"] for e in row["entities"]] == ["李四"]
    assert [(e["text"], e["confidence"]) for e in row["uncertain"]] == [("上海", round(math.exp(-1.7), 6))]


def test_least_confident_keeps_the_n_lowest_in_order_ties_by_input():
    chosen = LeastConfident(3)
    for index, confidence in enumerate([0.9, 0.2, None, 0.5, 0.2, 0.95, 0.1]):
        chosen.add({"text": str(index), "confidence": confidence})
    assert [row["text"] for row in chosen.rows()] == ["6", "1", "4"]
    assert (chosen.seen, chosen.unknown) == (7, 1)


def test_select_writes_label_studio_tasks_with_scores(tmp_path):
    _, predictions, rows = rows_for(tmp_path)
    out = tmp_path / "tasks.json"
    result = CliRunner().invoke(app, ["select", "--predictions", str(predictions), "-n", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert [task["data"]["text"] for task in tasks] == ["李四去上海"]  # the less confident sentence
    prediction = tasks[0]["predictions"][0]
    assert prediction["score"] == rows[1]["confidence"]
    assert [(r["value"]["text"], r["score"]) for r in prediction["result"]] == [
        ("上海", rows[1]["entities"][0]["confidence"])
    ]
    assert 'Label value="address"' in (tmp_path / "tasks.label_config.xml").read_text()


def test_select_refuses_predictions_without_confidences(tmp_path):
    _, predictions, _ = rows_for(tmp_path, confident=False)
    result = CliRunner().invoke(app, ["select", "--predictions", str(predictions), "--out", str(tmp_path / "t.json")])
    assert result.exit_code != 0 and "none of the 2 predictions has a confidence" in result.output
    assert not (tmp_path / "t.json").exists()


def test_convert_carries_confidences_to_doccano_and_label_studio(tmp_path):
    _, predictions, rows = rows_for(tmp_path)
    result = CliRunner().invoke(
        app, ["convert", str(predictions), "--to", "doccano", "--out", str(tmp_path / "d.jsonl")]
    )
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["label"] == [[0, 2, "name"], [3, 5, "address"]]
    assert first["scores"] == [e["confidence"] for e in rows[0]["entities"]]
