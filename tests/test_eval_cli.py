"""`nerft eval --gold --predictions`: output, files it writes, one-line errors; the CLUENER round trip."""

import json

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app

GOLD = [
    {"text": "张三在北京大学读书。", "label": {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}}},
    {"text": "温格的球队2比1战胜曼联", "label": {"name": {"温格": [[0, 1]]}, "organization": {"曼联": [[10, 11]]}}},
    {"text": "今天天气很好", "label": {}},
]
# LLaMA-Factory's generated_predictions.jsonl shape: prompt, predict, label.
PREDICTIONS = [
    {"prompt": "<|im_start|>system\nNER<|im_end|>\n...", "predict": "name:张三\norganization:北京大学", "label": "..."},
    {"prompt": "...", "predict": "name:温格\ncompany:曼联<|im_end|>", "label": "..."},
    {"prompt": "...", "predict": "???", "label": "无"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "gold.jsonl", GOLD), write_jsonl(tmp_path / "predictions.jsonl", PREDICTIONS)


def run(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def test_prints_the_table_unparseable_count_and_span_f1(files):
    gold, predictions = files
    result = run("--gold", gold, "--predictions", predictions)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Label", "Precision", "Recall", "F1", "Support"]
    # name: 2 TP. organization: 北京大学 TP, 曼联 FN. company (no gold label, no --labels): 曼联 FP,
    # listed apart below the table, counted in micro, not in macro.
    assert lines[1].split() == ["name", "1.0000", "1.0000", "1.0000", "2"]
    assert lines[2].split() == ["organization", "1.0000", "0.5000", "0.6667", "2"]
    # micro: TP 3, FP 1, FN 1; macro: (1 + 2/3) / 2
    assert lines[3].split() == ["Micro", "Avg.", "0.7500", "0.7500", "0.7500", "4"]
    assert lines[4].split() == ["Macro", "Avg.", "1.0000", "0.7500", "0.8333", "4"]
    assert lines[5] == "Other labels (not the dataset's; 1 false positives in micro, not in macro): company (1)"
    assert "records: 3, unparseable: 1" in result.stdout
    assert "span F1 (seqeval, micro): 0.7500" in result.stdout
    assert (
        lines[-1] == "predicted strings left out of span scoring: 0 not in their sentence, 0 overlapping a longer one"
    )


def test_report_and_errors_files(files, tmp_path):
    gold, predictions = files
    report, errors = tmp_path / "out" / "report.json", tmp_path / "out" / "errors.jsonl"
    result = run("--gold", gold, "--predictions", predictions, "--report", report, "--errors", errors)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert {"labels", "micro", "macro", "unparseable", "seqeval", "records", "errors"} <= set(data)
    assert data["records"] == 3 and data["unparseable"] == 1
    assert set(data["labels"]["name"]) >= {"precision", "recall", "f1", "support"}
    assert data["micro"]["f1"] == pytest.approx(0.75)
    assert data["macro"]["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert data["other_labels"] == {"company": 1}
    assert data["seqeval"]["micro"]["f1"] == pytest.approx(0.75)
    assert set(data["seqeval"]["labels"]) == {"name", "organization"}
    assert data["seqeval"]["other_labels"] == {"company": 1}
    rows = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {
            "index": 1,
            "line": 2,
            "text": "温格的球队2比1战胜曼联",
            "predict": "name:温格\ncompany:曼联<|im_end|>",
            "unparseable": False,
            "false_positives": [["company", "曼联"]],
            "false_negatives": [["organization", "曼联"]],
        },
        {
            "index": 2,
            "line": 3,
            "text": "今天天气很好",
            "predict": "???",
            "unparseable": True,
            "false_positives": [],
            "false_negatives": [],
        },
    ]
    assert data["errors"] == rows
    # organization:曼联 predicted as company: one wrong label; the rest is right
    assert data["confusion"] == {
        "matrix": {"name": {"name": 2}, "organization": {"company": 1, "organization": 1}},
        "boundary": {},
        "missed": {},
        "spurious": {},
    }
    # no temporary files; report.md, its charts and errors.html are nerft.reporting's readable copy
    assert sorted(p.name for p in report.parent.iterdir()) == [
        "confusion.png",
        "errors.html",
        "errors.jsonl",
        "f1_by_label.png",
        "report.html",
        "report.json",
        "report.md",
    ]
    markdown = (report.parent / "report.md").read_text(encoding="utf-8")
    assert (
        "| organization | 1 | 0 | 1 | 0 | 0 |" in markdown and "![Label confusion heatmap](confusion.png)" in markdown
    )
    assert "| name | 1.0000 | 1.0000 | 1.0000 | 2 | 2 | 0 | 0 |" in (report.parent / "report.md").read_text(
        encoding="utf-8"
    )


def test_json_output(files):
    gold, predictions = files
    result = run("--gold", gold, "--predictions", predictions, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["micro"]["f1"] == pytest.approx(0.75)
    assert data["unparseable"] == 1


def test_count_mismatch_names_both_counts_and_writes_nothing(files, tmp_path):
    gold, _ = files
    predictions = write_jsonl(tmp_path / "short.jsonl", PREDICTIONS[:2])
    report = tmp_path / "report.json"
    result = run("--gold", gold, "--predictions", predictions, "--report", report)
    assert result.exit_code == 1
    assert f"nerft: error: {predictions} has 2 predictions but the gold file has 3 records" in result.stderr
    assert "Traceback" not in result.output
    assert not report.exists()


def test_non_json_line_names_file_and_line(files, tmp_path):
    gold, _ = files
    predictions = tmp_path / "broken.jsonl"
    lines = [json.dumps(row, ensure_ascii=False) for row in PREDICTIONS]
    lines[1] = lines[1][:-5]
    predictions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("--gold", gold, "--predictions", predictions)
    assert result.exit_code == 1
    assert f"nerft: error: {predictions}:2: broken JSON (" in result.stderr
    assert "Traceback" not in result.output


def test_missing_predict_names_file_and_line(files, tmp_path):
    gold, _ = files
    rows = [dict(row) for row in PREDICTIONS]
    del rows[2]["predict"]
    predictions = tmp_path / "nopredict.jsonl"
    # a blank line between rows is skipped, and line numbers still count it
    predictions.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n",
        encoding="utf-8",
    )
    result = run("--gold", gold, "--predictions", predictions)
    assert result.exit_code == 1
    assert f'{predictions}:4: expected an object with the model\'s answer in "predict"' in result.stderr


def test_predict_must_be_a_string(files, tmp_path):
    gold, _ = files
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"predict": "无"}, {"predict": None}, {"predict": "无"}])
    result = run("--gold", gold, "--predictions", predictions)
    assert result.exit_code == 1
    assert f'{predictions}:2: "predict" must be a string, found NoneType' in result.stderr


def test_gold_may_be_a_bio_file(tmp_path):
    gold = tmp_path / "gold.bio"
    gold.write_text("张 B-name\n三 I-name\n来 O\n了 O\n\n北 B-address\n京 I-address\n", encoding="utf-8")
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"predict": "name:张三"}, {"predict": "address:北京"}])
    result = run("--gold", gold, "--predictions", predictions, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["micro"]["f1"] == 1.0


def test_gold_without_labels_is_refused(tmp_path):
    gold = write_jsonl(tmp_path / "test.jsonl", [{"id": 0, "text": "张三来了"}])
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"predict": "name:张三"}])
    result = run("--gold", gold, "--predictions", predictions)
    assert result.exit_code == 1
    assert "no record has a 'label'" in result.stderr


def test_invalid_gold_is_refused_with_its_line(tmp_path):
    gold = write_jsonl(tmp_path / "gold.jsonl", [GOLD[0], {"text": "张三", "label": {"name": {"张三": [[0, 5]]}}}])
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"predict": "无"}, {"predict": "无"}])
    result = run("--gold", gold, "--predictions", predictions)
    assert result.exit_code == 1
    assert f"{gold}:2: error: name '张三': span [0, 5] is outside the text (length 2)" in result.output


# ACCEPTANCE: the prepared CLUENER examples, fed back as predictions, score 1.0.


@pytest.fixture(scope="module")
def prepared_cluener(cluener_dir, tmp_path_factory):
    from nerft.data.prepare import prepare_dataset

    out = {}
    for prompt in ("compact", "seed"):
        out_dir = tmp_path_factory.mktemp(f"cluener-{prompt}")
        result = prepare_dataset(
            train=cluener_dir / "train.jsonl", dev=cluener_dir / "dev.jsonl", out_dir=out_dir, prompt=prompt
        )
        assert result.errors == []
        assert result.splits["train"].records == 10748 and result.splits["dev"].records == 1343
        out[prompt] = out_dir
    return out


# All of train in one format only: scoring 10,748 records takes seqeval ~10 s, and the formats'
# parsers already meet on all of dev and in test_parse's property tests.
@pytest.mark.slow
@pytest.mark.parametrize("split, prompt", [("dev", "compact"), ("dev", "seed"), ("train", "compact")])
def test_acceptance_cluener_round_trip_scores_one(prepared_cluener, cluener_dir, tmp_path, prompt, split):
    examples = json.loads((prepared_cluener[prompt] / f"cluener_{split}.json").read_text(encoding="utf-8"))
    predictions = write_jsonl(tmp_path / "predictions.jsonl", [{"predict": example["output"]} for example in examples])
    report = tmp_path / "report.json"
    result = run("--gold", cluener_dir / f"{split}.jsonl", "--predictions", predictions, "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["unparseable"] == 0
    assert data["micro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": data["micro"]["support"]}
    assert data["macro"]["f1"] == 1.0
    assert all(row["f1"] == 1.0 for row in data["labels"].values()) and len(data["labels"]) == 10
    assert data["seqeval"]["micro"]["f1"] == 1.0
    assert data["errors"] == []
    # train's one record with nested spans: the two inner companies are left out on both sides.
    assert data["seqeval"]["gold_nested_dropped"] == (2 if split == "train" else 0)


def test_entities_not_in_their_sentence_are_scored_both_ways(tmp_path):
    gold = write_jsonl(tmp_path / "gold.jsonl", GOLD[:2])
    # the model altered 张三 into 张三丰, which is not in sentence 1
    predictions = write_jsonl(
        tmp_path / "p.jsonl",
        [{"predict": "name:张三丰\norganization:北京大学"}, {"predict": "name:温格\norganization:曼联"}],
    )
    report = tmp_path / "report.json"
    result = run("--gold", gold, "--predictions", predictions, "--report", report)
    assert result.exit_code == 0, result.output
    # as answered: TP 3 (北京大学, 温格, 曼联), FP 1 (张三丰), FN 1 (张三): P = R = F1 = 3/4
    # without 张三丰: TP 3, FP 0, FN 1: P 1, R 3/4, F1 6/7 = 0.8571
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["micro"]["f1"] == pytest.approx(0.75)
    assert data["in_text"]["not_in_text"] == 1
    assert (data["in_text"]["micro"]["precision"], data["in_text"]["micro"]["f1"]) == pytest.approx((1.0, 6 / 7))
    assert (
        "entities not in their sentence: 1; without them: micro F1 0.8571 (precision 1.0000, recall 0.7500)"
        in result.stdout
    )
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (
        "1 predicted entities are not in their sentence (counted as wrong above). Without them (`nerft predict` drops them by default):"
        in markdown
    )
    assert "micro F1 0.8571 (precision 1.0000, recall 0.7500)" in markdown


def test_rows_that_carry_their_text_must_be_the_gold_sentences(tmp_path):
    """`nerft predict` rows of the gold sentences in another order scored micro F1 0.0 with exit 0."""
    gold = write_jsonl(tmp_path / "gold.jsonl", GOLD)
    rows = [{"text": record["text"], "predict": "name:张三"} for record in GOLD]
    in_order = write_jsonl(tmp_path / "in-order.jsonl", rows)
    assert run("--gold", gold, "--predictions", in_order).exit_code == 0
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", [rows[0], rows[2], rows[1]])
    result = run("--gold", gold, "--predictions", shuffled, "--report", tmp_path / "out" / "report.json")
    assert result.exit_code == 1
    assert result.stderr == (
        f"nerft: error: {shuffled}:2: predicts '今天天气很好', not the gold sentence '温格的球队2比1战胜曼联' "
        f"({gold}:2) (the predictions must be of the gold records, in the same order)\n"
    )
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []  # nothing written
    without_text = write_jsonl(tmp_path / "answers.jsonl", [{"predict": row["predict"]} for row in rows])
    assert run("--gold", gold, "--predictions", without_text).exit_code == 0  # answers only: order is trusted
