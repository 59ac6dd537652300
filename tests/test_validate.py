"""Validation: every error and warning listed in `nerft.data.validate`'s docstring."""

import json

import pytest

from nerft.data.load import iter_checked, load_records
from nerft.data.records import Entity
from nerft.data.validate import check_json_record, check_tagged_record
from nerft.errors import DataError


def check(value, labels=None):
    return check_json_record(value, "f.jsonl", 7, labels)


def reasons(checked, severity):
    return [f.reason for f in checked.findings if f.severity == severity]


def test_a_valid_record():
    checked = check(
        {"text": "张三在北京", "label": {"address": {"北京": [[3, 4]]}, "name": {"张三": [[0, 1]]}}, "id": 5}
    )
    assert checked.ok and checked.findings == []
    record = checked.record
    assert record.entities == [Entity(0, 1, "name", "张三"), Entity(3, 4, "address", "北京")]  # by position
    assert (record.id, record.source, record.line, record.labelled) == (5, "f.jsonl", 7, True)


# Errors


@pytest.mark.parametrize(
    "value, reason",
    [
        ({"label": {}}, "no 'text' field"),
        ({"text": 12, "label": {}}, "'text' must be a string, found int"),
        ({"text": None}, "'text' must be a string, found NoneType"),
        ({"text": ""}, "empty text"),
        ({"text": " \t "}, "empty text"),
        ({"text": "张三", "label": []}, "'label' must be an object {type: {entity: [[start, end]]}}, found list"),
        ({"text": "张三", "label": {"name": ["张三"]}}, "label 'name': expected {entity: [[start, end], ...]}"),
        (
            {"text": "张三", "label": {"name": {"张三": []}}},
            "name '张三': spans must be a non-empty list of [start, end]",
        ),
        (
            {"text": "张三", "label": {"name": {"张三": [0, 1]}}},
            "name '张三': spans must be a list of [start, end] pairs, found [0, 1]",
        ),
        ({"text": "张三", "label": {"name": {"张三": [[0, 1, 2]]}}}, "name '张三': span [0, 1, 2] is not [start, end]"),
        ({"text": "张三", "label": {"name": {"张三": [[0.0, 1]]}}}, "name '张三': span [0.0, 1] is not [start, end]"),
        ({"text": "张三", "label": {"name": {"张三": [[True, 1]]}}}, "name '张三': span [True, 1] is not [start, end]"),
        (
            {"text": "张三", "label": {"name": {"张三": [[0, 2]]}}},
            "name '张三': span [0, 2] is outside the text (length 2)",
        ),
        (
            {"text": "张三", "label": {"name": {"张三": [[-1, 0]]}}},
            "name '张三': span [-1, 0] is outside the text (length 2)",
        ),
        ({"text": "张三", "label": {"name": {"张三": [[1, 0]]}}}, "name '张三': span [1, 0] starts after it ends"),
        ({"text": "张三李四", "label": {"name": {"张三": [[1, 2]]}}}, "name '张三': span [1, 2] covers '三李'"),
        (
            {"text": "张三", "label": {"person name": {"张三": [[0, 1]]}}},
            "label name 'person name' must be one word of letters, digits, '_' or '-'",
        ),
        (
            {"text": "张三", "label": {"a:b": {"张三": [[0, 1]]}}},
            "label name 'a:b' must be one word of letters, digits, '_' or '-'",
        ),
        (
            {"text": "张三", "label": {"": {"张三": [[0, 1]]}}},
            "label name '' must be one word of letters, digits, '_' or '-'",
        ),
        (
            {"text": "北京大学", "label": {"organization": {"北京大": [[0, 2]]}, "school": {"京大学": [[1, 3]]}}},
            "overlapping spans: organization '北京大' [0, 2] and school '京大学' [1, 3]",
        ),
    ],
)
def test_errors(value, reason):
    checked = check(value)
    assert not checked.ok
    assert reasons(checked, "error") == [reason]
    assert all(f.source == "f.jsonl" and f.line == 7 for f in checked.findings)


def test_label_not_in_labels_option():
    value = {"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}, "city": {"北京": [[3, 4]]}}}
    assert check(value).ok
    checked = check(value, labels=["name", "address"])
    assert reasons(checked, "error") == ["unknown label 'city' (allowed: address, name)"]


def test_every_span_error_of_a_record_is_reported():
    value = {"text": "张三李四", "label": {"name": {"张三": [[0, 1], [2, 3]], "王五": [[0, 9]]}}}
    assert reasons(check(value), "error") == [
        "name '张三': span [2, 3] covers '李四'",
        "name '王五': span [0, 9] is outside the text (length 4)",
    ]


def test_reader_errors_become_findings(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "好"}\n[1, 2]\n{"text": \n', encoding="utf-8")
    checked = list(iter_checked(path))
    assert [c.ok for c in checked] == [True, False, False]
    assert [(f.line, f.reason.split(":")[0].split(",")[0]) for c in checked[1:] for f in c.findings] == [
        (2, "expected a JSON object"),
        (3, "broken JSON"),
    ]


def test_empty_tagged_sentence_is_an_error():
    checked = check_tagged_record({"text": "  ", "entities": []}, "a.bio", 3)
    assert reasons(checked, "error") == ["empty text"] and checked.record is None


def test_tagged_label_checks():
    checked = check_tagged_record(
        {"text": "张三", "entities": [Entity(0, 1, "name", "张三")]}, "a.bio", 3, labels=["address"]
    )
    assert reasons(checked, "error") == ["unknown label 'name' (allowed: address)"]


# Warnings: the record is kept as it is


def test_entity_with_outer_whitespace():
    checked = check({"text": "我是 张三", "label": {"name": {" 张三": [[2, 4]]}}})
    assert checked.ok
    assert reasons(checked, "warning") == ["name ' 张三': entity has leading or trailing whitespace"]
    assert checked.record.mentions() == [("name", " 张三")]


def test_nested_spans():
    value = {
        "text": "《招商银行报告》",
        "label": {"book": {"《招商银行报告》": [[0, 7]]}, "company": {"招商银行": [[1, 4]]}},
    }
    checked = check(value)
    assert checked.ok
    assert reasons(checked, "warning") == ["nested spans: book '《招商银行报告》' [0, 7] and company '招商银行' [1, 4]"]


def test_nested_spans_with_the_same_start():
    value = {"text": "北京大学", "label": {"address": {"北京": [[0, 1]]}, "organization": {"北京大学": [[0, 3]]}}}
    assert reasons(check(value), "warning") == [
        "nested spans: address '北京' [0, 1] and organization '北京大学' [0, 3]"
    ]


def test_same_span_under_two_labels():
    value = {"text": "曼联", "label": {"organization": {"曼联": [[0, 1]]}, "company": {"曼联": [[0, 1]]}}}
    checked = check(value)
    assert checked.ok
    assert reasons(checked, "warning") == ["nested spans: company '曼联' [0, 1] and organization '曼联' [0, 1]"]


def test_record_without_label_in_a_labelled_file(tmp_path):
    rows = [
        {"text": "无标签一"},
        {"text": "张三", "label": {"name": {"张三": [[0, 1]]}}},
        {"text": "无标签二", "label": None},
        {"text": "有", "label": {}},
    ]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    checked = list(iter_checked(path))
    assert all(c.ok for c in checked)
    warnings = [(f.line, f.reason) for c in checked for f in c.findings]
    reason = "no 'label' in a file whose other records have one: treated as unlabelled"
    assert warnings == [(1, reason), (3, reason)]
    assert [c.record.labelled for c in checked] == [False, True, False, True]


def test_a_file_without_any_label_has_no_warning(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"id": 0, "text": "一"}\n{"id": 1, "text": "二"}\n', encoding="utf-8")
    checked = list(iter_checked(path))
    assert [c.findings for c in checked] == [[], []]
    assert [c.record.to_clue() for c in checked] == [{"id": 0, "text": "一"}, {"id": 1, "text": "二"}]


def test_load_records_lists_errors_with_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "好"}\n{"text": ""}\n{"label": {}}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(path)
    assert str(info.value).splitlines() == [f"{path}:2: error: empty text", f"{path}:3: error: no 'text' field"]


def test_load_records_of_an_empty_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        load_records(path)
