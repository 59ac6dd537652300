"""Texts of any length: where they are cut, how the pieces' rows become one row, the run's budget."""

import pytest

from nerft.data.records import CluenerRecord
from nerft.errors import DataError
from nerft.inference.documents import (
    CLUENER_LONGEST_CHARS,
    Span,
    TextFolder,
    document_row,
    piece_chars,
    split_document,
)
from nerft.inference.engines import Generation
from nerft.inference.predict import predict_records
from nerft.inference.predictions import prediction_row
from nerft.io import write_json_atomic
from nerft.prompts import get_format
from nerft.runfolder import LLAMAFACTORY_TRAIN, RunInfo, load_run, write_run

COMPACT = get_format("compact")


def pieces(text, max_chars):
    return [text[start:end] for start, end in split_document(text, max_chars)]


# ---- where a text is cut -----------------------------------------------------------------------


def test_a_text_within_the_budget_is_its_own_single_piece_untouched():
    assert split_document("孙丽在南京开了书店。", 50) == [Span(0, 10)]
    # even with sentence ends, line breaks and outer spaces inside: it is predicted as it is today
    assert split_document(" 你好。\n再见！ ", 10) == [Span(0, 9)]


def test_chinese_sentence_ends_keep_the_closing_quote_with_their_sentence():
    text = "张三去了北京。李四呢？“好的！”他说。"  # 19 characters
    assert split_document(text, 10) == [Span(0, 7), Span(7, 11), Span(11, 16), Span(16, 19)]
    assert pieces(text, 10) == ["张三去了北京。", "李四呢？", "“好的！”", "他说。"]


def test_a_run_of_chinese_ends_stays_together():
    assert pieces("真的吗？！是的……好吧；走了", 5) == ["真的吗？！", "是的……", "好吧；", "走了"]


def test_western_ends_need_a_space_or_the_end_after_them():
    text = "Alice met Bob in Paris. It cost 3.14 euros! Really? Yes."  # 56 characters
    assert split_document(text, 25) == [Span(0, 23), Span(24, 43), Span(44, 51), Span(52, 56)]
    assert pieces('She said "Go." He went.', 14) == ['She said "Go."', "He went."]


def test_lines_are_cut_whitespace_is_left_out_and_punctuation_alone_is_not_asked_about():
    text = "  第一行没有句号\n\n   第二行。  第三句\r\n……\n"  # 28 characters
    assert split_document(text, 8) == [Span(2, 9), Span(14, 18), Span(20, 23)]


def test_a_sentence_longer_than_the_budget_is_cut_at_a_late_comma_else_at_the_budget():
    assert split_document("甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未", 8) == [Span(0, 8), Span(8, 16), Span(16, 18)]
    assert split_document("甲乙丙丁戊，己庚辛壬癸子丑", 8) == [Span(0, 6), Span(6, 13)]
    # a comma in the first half of the window would leave a short piece: the budget cuts instead
    assert split_document("甲，乙丙丁戊己庚辛壬", 8) == [Span(0, 8), Span(8, 10)]
    # the space it is cut at belongs to no piece
    assert pieces("one two three four", 10) == ["one two", "three four"]


# ---- one row of a whole document ---------------------------------------------------------------


class ScriptedEngine:
    """Answers `answers[text]` ("无" otherwise), recording the texts it was asked about."""

    name = "scripted"

    def __init__(self, answers):
        self.answers = answers
        self.asked: list[str] = []

    def describe(self):
        return {"engine": self.name, "model": "m1"}

    def generate(self, requests):
        for request in requests:
            self.asked.append(request.text)
            yield Generation(self.answers.get(request.text, "无"), "stop")

    def close(self):
        pass


def predicted(texts, answers, max_chars, **kwargs):
    engine = ScriptedEngine(answers)
    rows = []
    records = [CluenerRecord(text=text, labelled=False, id=index) for index, text in enumerate(texts)]
    predict_records(records, engine, COMPACT, sink=rows.append, max_chars=max_chars, **kwargs)
    return rows, engine.asked


DOCUMENT = "今天天气很好。孙丽在南京开了书店。他读了《围城》。"  # pieces at 0, 7 and 17
ANSWERS = {"孙丽在南京开了书店。": "name:孙丽\naddress:南京\naddress:北京", "他读了《围城》。": "book:围城"}


def test_a_document_gives_one_row_with_offsets_in_the_document():
    rows, asked = predicted([DOCUMENT], ANSWERS, 10)
    assert asked == ["今天天气很好。", "孙丽在南京开了书店。", "他读了《围城》。"]
    assert rows == [
        {
            "id": 0,
            "text": DOCUMENT,
            "predict": "name:孙丽\naddress:南京\naddress:北京\nbook:围城",
            "entities": [
                {"label": "name", "text": "孙丽", "start": 7, "end": 9, "ambiguous": False, "confidence": None},
                {"label": "address", "text": "南京", "start": 10, "end": 12, "ambiguous": False, "confidence": None},
                {"label": "book", "text": "围城", "start": 21, "end": 23, "ambiguous": False, "confidence": None},
            ],
            "dropped": [{"label": "address", "text": "北京"}],
            "unparseable": False,
            "finish_reason": "stop",
            "confidence": None,
        }
    ]


def test_an_entity_found_again_in_a_later_piece_is_listed_at_both_places():
    rows, _ = predicted(["我在南京。你也在南京。"], {"我在南京。": "address:南京", "你也在南京。": "address:南京"}, 6)
    assert [(e["text"], e["start"], e["end"]) for e in rows[0]["entities"]] == [("南京", 2, 4), ("南京", 8, 10)]
    assert rows[0]["predict"] == "address:南京"  # what was named, once


def test_sentences_within_the_budget_give_the_rows_of_today():
    short = ["孙丽在南京开了书店。", "他读了《围城》。"]
    rows, asked = predicted([short[0], DOCUMENT, short[1]], ANSWERS, 10)
    assert asked[0] == short[0] and asked[-1] == short[1]
    for text, row, index in zip(short, (rows[0], rows[2]), (0, 2)):
        record = CluenerRecord(text=text, labelled=False, id=index)
        assert row == prediction_row(record, Generation(ANSWERS[text], "stop"), fmt=COMPACT)


def test_a_long_document_with_nothing_to_ask_about_is_answered_no_entity_in_its_place():
    rows, asked = predicted(["孙丽在南京开了书店。", " \n……\n" * 4, "他读了《围城》。"], ANSWERS, 10)
    assert asked == ["孙丽在南京开了书店。", "他读了《围城》。"]
    assert [row["id"] for row in rows] == [0, 1, 2]
    assert rows[1]["entities"] == [] and rows[1]["predict"] == "无" and rows[1]["confidence"] is None


def piece_row(text, answer, confidence, entity_confidence, *, uncertain=None, finish_reason="stop", unparseable=False):
    row = prediction_row(CluenerRecord(text=text, labelled=False), Generation(answer, finish_reason))
    for entity in row["entities"]:
        entity["confidence"] = entity_confidence
    row.update(confidence=confidence, unparseable=unparseable)
    if uncertain is not None:
        row["uncertain"] = uncertain
    return row


def test_confidences_are_kept_and_the_row_s_is_its_least_confident_piece_s():
    record = CluenerRecord(text="孙丽在南京。他读了《围城》。", labelled=False)
    spans = [Span(0, 6), Span(6, 14)]
    rows = [
        piece_row("孙丽在南京。", "name:孙丽", 0.5, 0.9, uncertain=[]),
        piece_row(
            "他读了《围城》。",
            "book:围城\nname:他",
            0.8,
            0.7,
            uncertain=[{"label": "name", "text": "他", "start": 0, "end": 1, "ambiguous": False, "confidence": 0.1}],
            finish_reason="length",
        ),
    ]
    row = document_row(record, spans, rows, COMPACT)
    assert [(e["text"], e["start"], e["end"], e["confidence"]) for e in row["entities"]] == [
        ("孙丽", 0, 2, 0.9),
        ("围城", 10, 12, 0.7),
        ("他", 6, 7, 0.7),
    ]
    assert row["uncertain"] == [
        {"label": "name", "text": "他", "start": 6, "end": 7, "ambiguous": False, "confidence": 0.1}
    ]
    assert row["confidence"] == 0.5
    assert row["finish_reason"] == "length"  # some piece was cut at the token limit


def test_an_unreadable_piece_marks_the_row_and_all_unreadable_keeps_the_raw_answers():
    record = CluenerRecord(text="孙丽在南京。他读了书。", labelled=False)
    spans = [Span(0, 6), Span(6, 11)]
    some = document_row(
        record,
        spans,
        [
            piece_row("孙丽在南京。", "name:孙丽", None, None),
            piece_row("他读了书。", "???", None, None, unparseable=True),
        ],
        COMPACT,
    )
    assert some["unparseable"] and some["predict"] == "name:孙丽"
    every = document_row(
        record,
        spans,
        [
            piece_row("孙丽在南京。", "??", None, None, unparseable=True),
            piece_row("他读了书。", "?!", None, None, unparseable=True),
        ],
        COMPACT,
    )
    assert every["unparseable"] and every["predict"] == "??\n?!"


# ---- how long a piece may be -------------------------------------------------------------------


def fake_run(tmp_path, *, cutoff_len=None, max_chars=None) -> RunInfo:
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    write_run(RunInfo(run_dir=run_dir, base_model="m", template="qwen", cutoff_len=cutoff_len))
    if max_chars is not None:
        data = tmp_path / "elsewhere"
        (run_dir / LLAMAFACTORY_TRAIN).write_text(f"dataset_dir: {data}\ndataset: mine_train\n", encoding="utf-8")
        splits = {"train": {"max_chars": max_chars}, "dev": {"max_chars": 999}}  # dev was not trained on
        write_json_atomic(
            data / "mine_meta.json", {"datasets": {"train": "mine_train", "dev": "mine_dev"}, "splits": splits}
        )
    return load_run(run_dir)


def test_the_budget_is_the_longest_trained_sentence_never_below_cluener_s(tmp_path):
    assert CLUENER_LONGEST_CHARS == 50
    assert piece_chars(None) == 50
    assert piece_chars(fake_run(tmp_path / "a", cutoff_len=400, max_chars=120)) == 120
    assert piece_chars(fake_run(tmp_path / "b", max_chars=28)) == 50


def test_without_notes_on_the_data_the_budget_comes_from_cutoff_len(tmp_path):
    # 400 tokens - 32 of the template - 3 of the system prompt "NER", half for the sentence
    assert piece_chars(fake_run(tmp_path / "a", cutoff_len=400)) == 182
    assert piece_chars(fake_run(tmp_path / "b", cutoff_len=64)) == 50
    assert piece_chars(fake_run(tmp_path / "c")) == 50


# ---- a folder of .txt files --------------------------------------------------------------------


def test_a_folder_of_text_files_is_one_document_per_file_in_name_order(tmp_path):
    (tmp_path / "b.txt").write_bytes("第二篇。\r\n完。".encode())
    (tmp_path / "a.txt").write_bytes("\ufeff第一篇。".encode())
    (tmp_path / "notes.md").write_text("not a document", encoding="utf-8")
    folder = TextFolder(tmp_path)
    assert len(folder) == 2
    assert [(record.id, record.text) for record in folder] == [("a.txt", "第一篇。"), ("b.txt", "第二篇。\r\n完。")]


def test_a_folder_without_text_files_or_with_one_not_in_utf8_is_refused(tmp_path):
    with pytest.raises(DataError, match="no .txt files"):
        TextFolder(tmp_path)
    (tmp_path / "gbk.txt").write_bytes("中文".encode("gbk"))
    with pytest.raises(DataError, match=r"gbk\.txt:1: not UTF-8 text \(byte 0\)"):
        list(TextFolder(tmp_path))


def test_the_demo_predicts_a_long_line_as_one_row_and_highlights_it_in_place():
    from nerft.serving.demo import highlighted, predict_text

    engine = ScriptedEngine(ANSWERS)
    rows = predict_text(f"他读了《围城》。\n{DOCUMENT}\n", engine, COMPACT, max_chars=10)
    assert [row["text"] for row in rows] == ["他读了《围城》。", DOCUMENT]
    shown = highlighted(rows)
    assert [shown["text"][e["start"] : e["end"]] for e in shown["entities"]] == ["围城", "孙丽", "南京", "围城"]
