"""Readers: every input shape, the line numbers they report, and `nerft prepare` refusing a bad file."""

import json

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.load import iter_checked, load_records
from nerft.data.readers import detect_format, iter_json_objects, iter_tagged_sentences
from nerft.data.records import Entity, Finding
from nerft.errors import DataError

RECORDS = [
    {"text": "张三在北京大学读书。", "label": {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}}},
    {"text": "今天天气很好", "label": {}},
    {"text": "温格的球队战胜曼联", "label": {"organization": {"曼联": [[7, 8]]}, "name": {"温格": [[0, 1]]}}},
]


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def jsonl(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read(path):
    return list(iter_json_objects(path))


def test_json_lines(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(RECORDS))
    assert read(path) == [(1, RECORDS[0]), (2, RECORDS[1]), (3, RECORDS[2])]


def test_json_lines_with_blank_lines_and_crlf(tmp_path):
    text = "\n" + jsonl(RECORDS[:1]) + "\n   \n" + jsonl(RECORDS[1:])
    path = write(tmp_path, "a.jsonl", text.replace("\n", "\r\n"))
    assert read(path) == [(2, RECORDS[0]), (5, RECORDS[1]), (6, RECORDS[2])]


def test_json_array_on_one_line(tmp_path):
    path = write(tmp_path, "a.json", json.dumps(RECORDS, ensure_ascii=False))
    assert read(path) == [(1, RECORDS[0]), (1, RECORDS[1]), (1, RECORDS[2])]


def test_json_array_one_record_a_line(tmp_path):
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS) + "\n]\n"
    path = write(tmp_path, "a.json", text)
    assert read(path) == [(2, RECORDS[0]), (3, RECORDS[1]), (4, RECORDS[2])]


def test_pretty_printed_json_array(tmp_path):
    text = json.dumps(RECORDS, ensure_ascii=False, indent=2)
    # "[" is line 1; the first record takes 21 lines (each span number on its own), the second 4.
    starts = [number for number, line in enumerate(text.splitlines(), start=1) if line == "  {"]
    assert starts == [2, 23, 27]
    path = write(tmp_path, "a.json", text)
    assert read(path) == list(zip(starts, RECORDS))


def test_concatenated_pretty_printed_objects(tmp_path):
    text = "\n".join(json.dumps(r, ensure_ascii=False, indent=4) for r in RECORDS) + "\n"
    starts = [number for number, line in enumerate(text.splitlines(), start=1) if line == "{"]
    assert starts == [1, 22, 26]
    path = write(tmp_path, "a.json", text)
    assert read(path) == list(zip(starts, RECORDS))


def test_concatenated_objects_on_one_line(tmp_path):
    path = write(tmp_path, "a.json", "".join(json.dumps(r, ensure_ascii=False) for r in RECORDS))
    assert [value for _, value in read(path)] == RECORDS


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(RECORDS), encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert detect_format(path) == "json"
    assert read(path) == [(1, RECORDS[0]), (2, RECORDS[1]), (3, RECORDS[2])]
    assert [r.text for r in load_records(path)] == [r["text"] for r in RECORDS]


def test_broken_json_lines_are_findings_at_their_line(tmp_path):
    lines = jsonl(RECORDS).splitlines()
    lines.insert(1, '{"text": "没有结束", "label": {}')
    lines.insert(3, '{"text": "引号"没转义"}')
    path = write(tmp_path, "a.jsonl", "\n".join(lines) + "\n")
    found = read(path)
    assert [line for line, _ in found] == [1, 2, 3, 4, 5]
    assert found[0][1] == RECORDS[0] and found[2][1] == RECORDS[1] and found[4][1] == RECORDS[2]
    for line, finding in (found[1], found[3]):
        assert isinstance(finding, Finding) and finding.severity == "error" and finding.line == line
    assert found[1][1].reason == "broken JSON: the object does not close (a missing '}', ']' or '\"'?)"
    # {"text": "引号" is 13 characters: the decoder stops at the 14th, 没
    assert found[3][1].reason == "broken JSON: Expecting ',' delimiter (line 4, column 14)"


def test_a_record_that_never_closes_is_reported_at_its_first_line(tmp_path):
    text = json.dumps(RECORDS, ensure_ascii=False, indent=2)
    cut = text[: text.rindex('"温格"')]  # the third record is cut off
    path = write(tmp_path, "a.json", cut)
    found = read(path)
    assert found[:2] == [(2, RECORDS[0]), (23, RECORDS[1])]
    assert found[2][0] == 27 and isinstance(found[2][1], Finding)
    assert str(found[2][1]).startswith(f"{path}:27: error: broken JSON")


def test_reading_goes_on_after_a_broken_record_of_a_pretty_printed_array(tmp_path):
    text = json.dumps(RECORDS, ensure_ascii=False, indent=2).replace(
        '"text": "今天天气很好",', '"text": "今天天气很好"'
    )
    path = write(tmp_path, "a.json", text)
    found = read(path)
    assert [line for line, _ in found] == [2, 23, 27]
    assert found[1][1].reason == "broken JSON: Expecting ',' delimiter (line 25, column 5)"
    assert found[2][1] == RECORDS[2]  # not swallowed by the broken record before it


def test_reading_goes_on_after_a_broken_record_of_a_one_line_a_record_array(tmp_path):
    lines = [json.dumps(r, ensure_ascii=False) for r in RECORDS]
    lines[0] = lines[0][:-1]  # no closing brace
    path = write(tmp_path, "a.json", "[" + ",\n".join(lines) + "]\n")
    found = read(path)
    assert [line for line, _ in found] == [1, 2, 3]
    assert isinstance(found[0][1], Finding) and found[1:] == [(2, RECORDS[1]), (3, RECORDS[2])]


def test_hand_formatted_records_and_two_on_a_line(tmp_path):
    text = (
        '{"text": "张三",\n     "label": {}}\n'  # closes on an indented line
        '{"text": "一"} {"text": "二", \n'  # a complete record, then a broken one
        '{"text": "三"}'  # no newline at the end
    )
    found = read(write(tmp_path, "a.json", text))
    assert [(line, value if isinstance(value, dict) else "broken") for line, value in found] == [
        (1, {"text": "张三", "label": {}}),
        (3, {"text": "一"}),
        (3, "broken"),
        (4, {"text": "三"}),
    ]


def test_values_that_are_not_objects(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(RECORDS[:1]) + '"just a string"\n42\n' + jsonl(RECORDS[1:2]))
    found = read(path)
    assert found[0] == (1, RECORDS[0]) and found[3] == (4, RECORDS[1])
    assert [(line, f.reason.split(",")[0]) for line, f in found[1:3]] == [
        (2, "expected a JSON object"),
        (3, "expected a JSON object"),
    ]


def test_not_utf8_is_one_line_error(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(jsonl(RECORDS).encode("gbk"))
    with pytest.raises(DataError, match=r"not UTF-8 text"):
        list(iter_checked(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")


def test_prepare_reports_every_problem_of_a_pretty_printed_array(tmp_path):
    rows = [*RECORDS, {"text": "张三", "label": {"name": {"张三": [[0, 7]]}}}]
    text = json.dumps(rows, ensure_ascii=False, indent=2).replace('"text": "今天天气很好",', '"text": "今天天气很好"')
    path = write(tmp_path, "train.json", text)
    result = CliRunner().invoke(app, ["prepare", "--train", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{path}:23: error: broken JSON" in result.stderr
    assert f"{path}:48: error: name '张三': span [0, 7] is outside the text (length 2)" in result.stderr
    assert not (tmp_path / "out").exists()


# Char-level tagged files


def tagged(path, rows):
    """rows: sentences as lists of (char, tag); blank line between sentences."""
    path.write_text(
        "\n\n".join("\n".join(f"{c} {t}" for c, t in sentence) for sentence in rows) + "\n", encoding="utf-8"
    )
    return path


def test_bio_file(tmp_path):
    path = tagged(
        tmp_path / "a.bio",
        [
            [
                ("张", "B-name"),
                ("三", "I-name"),
                ("在", "O"),
                ("北", "B-organization"),
                ("京", "I-organization"),
                ("大", "I-organization"),
                ("学", "I-organization"),
            ],
            [("今", "O"), ("天", "O")],
            [
                ("曼", "B-organization"),
                ("联", "I-organization"),
                ("和", "O"),
                ("切", "B-organization"),
                ("尔", "I-organization"),
                ("西", "B-organization"),
            ],  # B after I starts a new entity
        ],
    )
    found = list(iter_tagged_sentences(path))
    assert [line for line, _ in found] == [1, 9, 12]
    assert found[0][1] == {
        "text": "张三在北京大学",
        "entities": [Entity(0, 1, "name", "张三"), Entity(3, 6, "organization", "北京大学")],
    }
    assert found[1][1] == {"text": "今天", "entities": []}
    assert found[2][1]["entities"] == [
        Entity(0, 1, "organization", "曼联"),
        Entity(3, 4, "organization", "切尔"),
        Entity(5, 5, "organization", "西"),
    ]


def test_bmes_and_bioes_files(tmp_path):
    bmes = tagged(
        tmp_path / "a.bmes",
        [
            [
                ("浙", "B-company"),
                ("商", "M-company"),
                ("银", "M-company"),
                ("行", "E-company"),
                ("的", "O"),
                ("叶", "S-name"),
            ]
        ],
    )
    bioes = tagged(
        tmp_path / "a.bioes",
        [
            [
                ("浙", "B-company"),
                ("商", "I-company"),
                ("银", "I-company"),
                ("行", "E-company"),
                ("的", "O"),
                ("叶", "S-name"),
                ("王", "S-name"),
            ]
        ],
    )
    expected = [Entity(0, 3, "company", "浙商银行"), Entity(5, 5, "name", "叶")]
    assert list(iter_tagged_sentences(bmes)) == [(1, {"text": "浙商银行的叶", "entities": expected})]
    assert list(iter_tagged_sentences(bioes))[0][1]["entities"] == [*expected, Entity(6, 6, "name", "王")]


def test_tagged_file_with_tabs_spaces_and_iob1(tmp_path):
    # a space is a character of CLUENER text; IOB1 starts an entity with I- after O
    path = write(tmp_path, "a.txt", "A\tI-name\nB\tI-name\n \tO\nC\tI-game\n")
    assert list(iter_tagged_sentences(path)) == [
        (1, {"text": "AB C", "entities": [Entity(0, 1, "name", "AB"), Entity(3, 3, "game", "C")]})
    ]
    assert detect_format(path) == "tagged"


def test_tagged_file_problems_name_their_line(tmp_path):
    path = write(tmp_path, "a.bio", "张 B-name\n三 I-name\n\n今天 O\n好 O\n\n张 X-name\n\n李 B-name\n")
    found = list(iter_tagged_sentences(path))
    assert [line for line, _ in found] == [1, 4, 7, 9]
    assert found[1][1] == Finding("error", str(path), 4, "expected one character and its tag, found '今天 O'")
    assert found[2][1].line == 7 and found[2][1].reason.startswith("unknown tag 'X-name'")
    assert found[3][1] == {"text": "李", "entities": [Entity(0, 0, "name", "李")]}


def test_tagged_records_go_through_load(tmp_path):
    path = tagged(tmp_path / "a.bio", [[("张", "B-name"), ("三", "I-name"), ("来", "O")]])
    (record,) = load_records(path)
    assert record.text == "张三来" and record.mentions() == [("name", "张三")] and record.line == 1


# The end-to-end refusal


def test_prepare_refuses_a_file_with_a_bad_span_and_broken_json(tmp_path):
    lines = jsonl(RECORDS).splitlines()
    lines[1] = json.dumps(
        {"text": "今天天气很好", "label": {"scene": {"天气": [[2, 4]]}}}, ensure_ascii=False
    )  # covers 天气很
    lines.append('{"text": "断了", "label": {"name": {"断": [[0, 0]]}')  # never closes
    lines.append(json.dumps(RECORDS[0], ensure_ascii=False))
    data = write(tmp_path, "train.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "dataset"
    out.mkdir()
    info = out / "dataset_info.json"
    info.write_text('{\n    "alpaca_zh": {"file_name": "alpaca_zh.json"}\n}\n', encoding="utf-8")
    before = info.read_bytes()

    result = CliRunner().invoke(app, ["prepare", "--train", str(data), "--out", str(out)])

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{data}:2: error: scene '天气': span [2, 4] covers '天气很'" in result.stderr
    assert f"{data}:4: error: broken JSON" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("nerft: error: 2 invalid record(s); nothing was written")
    assert info.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json"]


def test_a_line_that_is_not_an_object_is_quoted_whole(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a"}\n[1,2]\n"x"\n', encoding="utf-8")
    found = list(iter_json_objects(path))
    assert found[1] == (2, Finding("error", str(path), 2, "expected a JSON object, found '[1,2]'"))
    assert found[2] == (3, Finding("error", str(path), 3, "expected a JSON object, found '\"x\"'"))
