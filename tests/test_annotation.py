"""doccano JSONL and Label Studio tasks, both ways: reading them like CLUE records (same errors),
writing records and predictions, and round trips that give back the same records."""

import json

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.annotation import label_studio_config, to_doccano, to_label_studio
from nerft.data.load import load_records
from nerft.data.records import CluenerRecord, Entity
from nerft.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def same(records):
    return [(r.text, r.entities, r.id, r.labelled) for r in records]


def run(*args):
    return CliRunner().invoke(app, [*map(str, args)])


# ---- reading ----------------------------------------------------------------------------------


def test_doccano_offsets_are_end_exclusive(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"id": 3, "text": "张三在北京大学", "label": [[3, 7, "organization"], [0, 2, "name"]]}]
    )
    [record] = load_records(path)
    assert record.entities == [Entity(0, 1, "name", "张三"), Entity(3, 6, "organization", "北京大学")]
    assert (record.id, record.labelled, record.line) == (3, True, 1)


def test_label_studio_takes_the_last_annotation_not_cancelled(tmp_path):
    def region(start, end, text, label):
        return {
            "type": "labels",
            "from_name": "label",
            "to_name": "text",
            "value": {"start": start, "end": end, "text": text, "labels": [label]},
        }

    tasks = [
        {
            "id": 11,
            "data": {"text": "张三在北京"},
            "annotations": [
                {"result": [region(0, 2, "张三", "name")]},
                {"result": [region(3, 5, "北京", "address"), region(0, 2, "张三", "name")]},
                {"was_cancelled": True, "result": []},
            ],
            "predictions": [{"result": [region(0, 1, "张", "name")]}],
        },
        {"id": 12, "data": {"sentence": "无人之地"}, "annotations": []},  # another Text name; not annotated yet
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks, ensure_ascii=False, indent=2), encoding="utf-8")
    first, second = load_records(path)
    assert first.entities == [Entity(0, 1, "name", "张三"), Entity(3, 4, "address", "北京")] and first.id == 11
    assert (second.text, second.entities, second.labelled, second.id) == ("无人之地", [], False, 12)
    starts = [
        number for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line == "  {"
    ]
    assert (first.line, second.line) == tuple(starts) and starts[0] == 2  # where each task opens


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"text": "张三", "label": [[0, 3, "name"]]}, "name [0, 3): span outside the text (length 2)"),
        ({"text": "张三", "label": [[1, 1, "name"]]}, "name [1, 1): empty or reversed span (end is exclusive)"),
        ({"text": "张三", "label": [[0, 2]]}, 'label entry [0, 2] is not [start, end, "TYPE"]'),
        (
            {"text": "张三", "label": [[0, 2, "人 名"]]},
            "label name '人 名' must be one word of letters, digits, '_' or '-'",
        ),
        ({"text": "  ", "label": []}, "empty text"),
        (
            {
                "data": {"text": "张三来了"},
                "annotations": [
                    {
                        "result": [
                            {"type": "labels", "value": {"start": 1, "end": 3, "text": "张三", "labels": ["name"]}}
                        ]
                    }
                ],
            },
            "name [1, 3): span covers '三来', not '张三'",
        ),
        (
            {
                "data": {"text": "张三"},
                "annotations": [{"result": [{"type": "labels", "value": {"start": 0, "end": 2, "labels": "name"}}]}],
            },
            "value 'labels' must be a non-empty list of label names, found 'name'",
        ),
        ({"data": {"a": "x", "b": "y"}, "annotations": []}, "no 'data.text' field"),
    ],
)
def test_bad_records_name_file_line_and_reason(tmp_path, row, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "好", "label": []}, row])
    with pytest.raises(DataError) as error:
        load_records(path)
    assert str(error.value) == f"{path}:2: error: {reason}"


def test_crossing_spans_and_unknown_labels_are_checked_as_for_clue(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"text": "北京大学城", "label": [[0, 4, "organization"], [2, 5, "address"]]}]
    )
    with pytest.raises(DataError, match="overlapping spans"):
        load_records(path)
    with pytest.raises(DataError, match="unknown label 'organization'"):
        load_records(
            write_jsonl(tmp_path / "e.jsonl", [{"text": "北京大学", "label": [[0, 4, "organization"]]}]),
            labels=["name"],
        )


def test_prepare_refuses_a_bad_label_studio_export_and_writes_nothing(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "data": {"text": "张三"},
                    "annotations": [
                        {
                            "result": [
                                {"type": "labels", "value": {"start": 0, "end": 9, "text": "张三", "labels": ["name"]}}
                            ]
                        }
                    ],
                }
            ]
        ),
        encoding="utf-8",
    )
    result = run("prepare", "--train", path, "--out", tmp_path / "out", "--val-size", "0")
    assert result.exit_code == 1
    assert f"{path}:1: error: name [0, 9): span outside the text (length 2)" in result.stderr
    assert not (tmp_path / "out").exists()


# ---- writing and round trips ----------------------------------------------------------------


def test_writers_by_hand():
    record = CluenerRecord(
        text="张三在北京", entities=[Entity(0, 1, "name", "张三"), Entity(3, 4, "address", "北京")], id=5
    )
    assert to_doccano(record) == {"id": 5, "text": "张三在北京", "label": [[0, 2, "name"], [3, 5, "address"]]}
    task = to_label_studio(record, as_prediction=True, model_version="run-a")
    assert task["data"] == {"text": "张三在北京", "id": 5} and "annotations" not in task
    assert task["predictions"][0]["model_version"] == "run-a"
    assert task["predictions"][0]["result"][1] == {
        "id": "e1",
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": 3, "end": 5, "text": "北京", "labels": ["address"]},
    }
    assert label_studio_config(["name", "address", "name"]) == (
        '<View>\n  <Labels name="label" toName="text">\n    <Label value="address"/>\n    <Label value="name"/>\n'
        '  </Labels>\n  <Text name="text" value="$text"/>\n</View>\n'
    )


def round_trip(source, tmp_path):
    original = load_records(source)
    for to, name in (("doccano", "d.jsonl"), ("label-studio", "ls.json"), ("clue", "c.jsonl")):
        result = run("convert", source, "--to", to, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert same(load_records(tmp_path / name)) == same(original), to
    return original


def test_the_bundled_sample_round_trips_through_doccano_and_label_studio(tmp_path, sample_dir):
    for split in ("train", "dev", "test"):
        round_trip(sample_dir / f"{split}.jsonl", tmp_path)
    # and nerft prepare writes byte for byte the same files from either
    run("convert", sample_dir / "train.jsonl", "--to", "label-studio", "--out", tmp_path / "train.json")
    run("convert", sample_dir / "dev.jsonl", "--to", "doccano", "--out", tmp_path / "dev.jsonl")
    for out, (train, dev) in (
        ("a", (sample_dir / "train.jsonl", sample_dir / "dev.jsonl")),
        ("b", (tmp_path / "train.json", tmp_path / "dev.jsonl")),
    ):
        assert run("prepare", "--train", train, "--dev", dev, "--out", tmp_path / out).exit_code == 0
    for name in ("cluener_train.json", "cluener_dev.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cluener_dev_round_trips(tmp_path, cluener_dir):
    original = round_trip(cluener_dir / "dev.jsonl", tmp_path)
    assert len(original) == 1343


def test_predictions_become_label_studio_pre_annotations_and_doccano_labels(tmp_path):
    rows = [
        {
            "text": "张三和张三",
            "predict": "name:张三",
            "entities": [{"label": "name", "text": "张三", "start": 0, "end": 2, "ambiguous": True}],
            "dropped": [],
            "unparseable": False,
            "finish_reason": "stop",
        },
        {
            "id": "x",
            "text": "今天",
            "predict": "无",
            "entities": [],
            "dropped": [],
            "unparseable": False,
            "finish_reason": "stop",
        },
    ]
    predictions = write_jsonl(tmp_path / "pred.jsonl", rows)
    result = run(
        "convert", predictions, "--to", "label-studio", "--out", tmp_path / "tasks.json", "--labels", "address,name"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 2 pre-annotated tasks (1 entities) to {tmp_path / 'tasks.json'}\n"
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    assert [task["predictions"][0]["result"] for task in tasks] == [
        [
            {
                "id": "e0",
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "value": {"start": 0, "end": 2, "text": "张三", "labels": ["name"]},
            }
        ],
        [],
    ]
    assert tasks[1]["data"] == {"text": "今天", "id": "x"}
    assert (tmp_path / "tasks.label_config.xml").read_text(encoding="utf-8") == label_studio_config(["address", "name"])
    assert run("convert", predictions, "--to", "doccano", "--out", tmp_path / "d.jsonl").exit_code == 0
    assert (tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines() == [
        '{"text": "张三和张三", "label": [[0, 2, "name"]]}',
        '{"id": "x", "text": "今天", "label": []}',
    ]
    # pre-annotations are not gold: read back, the tasks are unlabelled sentences
    assert [r.labelled for r in load_records(tmp_path / "tasks.json")] == [False, False]


def test_convert_refuses_an_unknown_format_and_old_prediction_rows(tmp_path):
    rows = write_jsonl(
        tmp_path / "old.jsonl",
        [{"text": "张三", "predict": "name:张三", "entities": [{"label": "name", "text": "张三"}]}],
    )
    result = run("convert", rows, "--to", "doccano", "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 1 and f"{rows}:1: expected a `nerft predict` row" in result.stderr
    result = run("convert", rows, "--to", "brat", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "--to 'brat': expected one of label-studio, doccano, clue" in result.stderr
