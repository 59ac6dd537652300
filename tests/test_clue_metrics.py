"""CLUE's set scoring, seqeval span scoring and `evaluate`, checked against hand-counted numbers."""

from collections import defaultdict

import pytest

from nerft.data.validate import check_json_record
from nerft.metrics.clue import format_table, score_clue
from nerft.metrics.evaluate import evaluate
from nerft.metrics.parse import parse_output
from nerft.metrics.spans import bio_tags, gold_spans, ground_mentions, score_spans


def record(text, label=None, line=1):
    checked = check_json_record({"text": text, "label": label or {}}, "gold.jsonl", line)
    assert checked.ok, checked.findings
    return checked.record


# 14 sentences, gold and the raw answer of a messy model. Character offsets are inclusive.
MESSY = [
    # S1 compact, right, <|im_end|> after it
    (
        "张三在北京大学读书。",
        {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}},
        "name:张三\norganization:北京大学<|im_end|>",
    ),
    # S2 fenced JSON with prose: 浙商银行 right, 博士 a wrong entity, 叶老桂 missed
    (
        "浙商银行企业信贷部叶老桂博士",
        {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[9, 11]]}},
        '这个句子包含以下实体：\n```json\n[{"label": "company", "text": "浙商银行"}, {"label": "position", "text": "博士"}]\n```\n',
    ),
    # S3 曼联 under the wrong label
    (
        "温格的球队2比1战胜曼联",
        {"name": {"温格": [[0, 1]]}, "organization": {"曼联": [[10, 11]]}},
        "name:温格\ncompany:曼联",
    ),
    # S4 duplicates in the answer; 广州恒大 annotated twice
    (
        "广州恒大主场击败上海申花，广州恒大排名第一",
        {"organization": {"广州恒大": [[0, 3], [13, 16]], "上海申花": [[8, 11]]}},
        "organization:广州恒大\norganization:广州恒大\norganization:上海申花",
    ),
    # S5 an entity that is not in the sentence (大刘)
    (
        "《三体》是刘慈欣的作品",
        {"book": {"《三体》": [[0, 3]]}, "name": {"刘慈欣": [[5, 7]]}},
        "book:《三体》\nname:刘慈欣\nname:大刘",
    ),
    # S6 unparseable
    ("他在杭州西湖边散步", {"address": {"杭州": [[2, 3]]}, "scene": {"西湖": [[4, 5]]}}, "I'm sorry, I can't do that."),
    # S7 dict form {label: [texts]}
    (
        "国家统计局公布了数据",
        {"government": {"国家统计局": [[0, 4]]}},
        '{"government": ["国家统计局"], "organization": []}',
    ),
    # S8 CLUE form {label: {text: spans}}; 腾讯公司 is not in the sentence, 腾讯 missed
    (
        "王者荣耀是腾讯的游戏",
        {"game": {"王者荣耀": [[0, 3]]}, "company": {"腾讯": [[5, 6]]}},
        '{"game": {"王者荣耀": [[0, 3]]}, "company": {"腾讯公司": [[5, 8]]}}',
    ),
    # S9 JSON cut off by the token limit: 《英雄》 never written
    (
        "李四担任总经理，电影《英雄》上映",
        {"name": {"李四": [[0, 1]]}, "position": {"总经理": [[4, 6]]}, "movie": {"《英雄》": [[10, 13]]}},
        '[{"label": "name", "text": "李四"}, {"label": "position", "text": "总经理"}, {"label": "movie", "te',
    ),
    # S10 no entity, none predicted
    ("今天天气很好", {}, "无<|im_end|>"),
    # S11 no entity, one predicted
    ("今天天气不错", {}, "scene:天气"),
    # S12 full-width colon, whitespace, </s>
    (
        "马云创办了阿里巴巴",
        {"name": {"马云": [[0, 1]]}, "company": {"阿里巴巴": [[5, 8]]}},
        " name ： 马云 \ncompany：阿里巴巴 </s>",
    ),
    # S13 北京 inside 北京大学 and on its own
    (
        "北京大学在北京",
        {"organization": {"北京大学": [[0, 3]]}, "address": {"北京": [[5, 6]]}},
        "organization:北京大学\naddress:北京",
    ),
    # S14 上海 only inside 上海浦东新区
    ("上海浦东新区很大", {"address": {"上海浦东新区": [[0, 5]]}}, "address:上海浦东新区\naddress:上海"),
]

# What parse_output must read from each answer (None: unparseable).
MESSY_PARSED = [
    [("name", "张三"), ("organization", "北京大学")],
    [("company", "浙商银行"), ("position", "博士")],
    [("name", "温格"), ("company", "曼联")],
    [("organization", "广州恒大"), ("organization", "广州恒大"), ("organization", "上海申花")],
    [("book", "《三体》"), ("name", "刘慈欣"), ("name", "大刘")],
    None,
    [("government", "国家统计局")],
    [("game", "王者荣耀"), ("company", "腾讯公司")],
    [("name", "李四"), ("position", "总经理")],
    [],
    [("scene", "天气")],
    [("name", "马云"), ("company", "阿里巴巴")],
    [("organization", "北京大学"), ("address", "北京")],
    [("address", "上海浦东新区"), ("address", "上海")],
]

# CLUE set scoring, counted by hand (S = sentence):
#   name:         TP S1 张三, S3 温格, S5 刘慈欣, S9 李四, S12 马云 = 5; FP S5 大刘 = 1; FN S2 叶老桂 = 1
#   organization: TP S1 北京大学, S4 广州恒大 (once: a set), S4 上海申花, S13 北京大学 = 4; FP 0; FN S3 曼联 = 1
#   company:      TP S2 浙商银行, S12 阿里巴巴 = 2; FP S3 曼联, S8 腾讯公司 = 2; FN S8 腾讯 = 1
#   position:     TP S9 总经理 = 1; FP S2 博士 = 1; FN 0
#   book:         TP S5 = 1
#   scene:        TP 0; FP S11 天气 = 1; FN S6 西湖 (unparseable) = 1
#   address:      TP S13 北京, S14 上海浦东新区 = 2; FP S14 上海 = 1; FN S6 杭州 = 1
#   government:   TP S7 = 1;  game: TP S8 = 1;  movie: FN S9 《英雄》 = 1
CLUE_EXPECTED = {  # label: (precision, recall, f1, support)
    "address": (2 / 3, 2 / 3, 2 / 3, 3),
    "book": (1.0, 1.0, 1.0, 1),
    "company": (2 / 4, 2 / 3, 4 / 7, 3),  # F1 = 2*2 / (2*2 + 2 + 1)
    "game": (1.0, 1.0, 1.0, 1),
    "government": (1.0, 1.0, 1.0, 1),
    "movie": (0.0, 0.0, 0.0, 1),  # never predicted: precision 0 by convention
    "name": (5 / 6, 5 / 6, 5 / 6, 6),
    "organization": (1.0, 4 / 5, 8 / 9, 5),
    "position": (1 / 2, 1.0, 2 / 3, 1),
    "scene": (0.0, 0.0, 0.0, 1),
}
# micro: TP 5+4+2+1+1+0+2+1+1+0 = 17, FP 1+0+2+1+0+1+1 = 6, FN 1+1+1+0+0+1+1+0+0+1 = 6
CLUE_MICRO = (17 / 23, 17 / 23, 17 / 23)
# macro F1: (5/6 + 8/9 + 4/7 + 2/3 + 1 + 0 + 2/3 + 1 + 1 + 0) / 10 = (835/126) / 10
CLUE_MACRO_F1 = 835 / 1260

# Span scoring (seqeval), counted by hand. Gold spans: every annotated occurrence (S4 广州恒大 twice).
#   Grounding: S2 博士 -> [12, 13] (FP position); S3 company 曼联 -> [10, 11] (FP company, gold
#   organization there is FN); S5 大刘 and S8 腾讯公司 are not in their sentence (dropped, 2);
#   S11 天气 -> [2, 3] (FP scene); S14 上海 overlaps 上海浦东新区, placed first as it is longer
#   (dropped, 1); S13 北京 takes its annotated span [5, 6], not the 北京 inside 北京大学.
#   name:         TP 5, FP 0, FN 1          -> P 1, R 5/6, F1 10/11
#   organization: TP S1 1 + S4 3 + S13 1 = 5, FP 0, FN S3 1 -> P 1, R 5/6, F1 10/11
#   company:      TP 2, FP S3 1, FN S8 1    -> 2/3, 2/3, 2/3
#   position:     TP 1, FP 1, FN 0          -> 1/2, 1, 2/3
#   address:      TP S13, S14 = 2, FP 0, FN S6 1 -> 1, 2/3, 4/5
#   scene:        TP 0, FP 1, FN 1 -> 0;  movie: FN 1 -> 0;  book, government, game: 1
SPAN_EXPECTED = {
    "address": (1.0, 2 / 3, 4 / 5, 3),
    "book": (1.0, 1.0, 1.0, 1),
    "company": (2 / 3, 2 / 3, 2 / 3, 3),
    "game": (1.0, 1.0, 1.0, 1),
    "government": (1.0, 1.0, 1.0, 1),
    "movie": (0.0, 0.0, 0.0, 1),
    "name": (1.0, 5 / 6, 10 / 11, 6),
    "organization": (1.0, 5 / 6, 10 / 11, 6),
    "position": (1 / 2, 1.0, 2 / 3, 1),
    "scene": (0.0, 0.0, 0.0, 1),
}
# micro: TP 18, FP 3, FN 6 (24 gold spans)
SPAN_MICRO = (18 / 21, 18 / 24, 36 / 45)
# macro F1: (2 * 10/11 + 2/3 + 2/3 + 4/5 + 3) / 10 = (1147/165) / 10
SPAN_MACRO_F1 = 1147 / 1650


@pytest.fixture(scope="module")
def messy():
    gold = [record(text, label, line) for line, (text, label, _) in enumerate(MESSY, start=1)]
    answers = [answer for _, _, answer in MESSY]
    return gold, answers, evaluate(gold, answers)


def test_messy_answers_parse_as_expected(messy):
    _, answers, report = messy
    assert [parse_output(answer) for answer in answers] == MESSY_PARSED
    assert {s.index: s.mentions for s in report.listed} == {
        index: MESSY_PARSED[index] for index in (1, 2, 4, 5, 7, 8, 10, 13)
    }
    assert report.unparseable == 1


def test_messy_clue_scores_match_hand_counts(messy):
    _, _, report = messy
    scores = report.to_dict()
    assert scores["records"] == 14
    assert scores["unparseable"] == 1
    assert sorted(scores["labels"]) == sorted(CLUE_EXPECTED)
    for label, (precision, recall, f1, support) in CLUE_EXPECTED.items():
        row = scores["labels"][label]
        assert row["precision"] == pytest.approx(precision, abs=1e-4), label
        assert row["recall"] == pytest.approx(recall, abs=1e-4), label
        assert row["f1"] == pytest.approx(f1, abs=1e-4), label
        assert row["support"] == support, label
    micro = scores["micro"]
    assert (micro["precision"], micro["recall"], micro["f1"]) == pytest.approx(CLUE_MICRO, abs=1e-4)
    assert micro["support"] == 23
    assert scores["macro"]["f1"] == pytest.approx(CLUE_MACRO_F1, abs=1e-4)


def test_messy_scores_without_entities_not_in_their_sentence(messy):
    # S5 name 大刘 and S8 company 腾讯公司 are not in their sentence: dropped, two false positives less.
    #   name:    TP 5, FP 0, FN 1 -> 1, 5/6, 10/11;   company: TP 2, FP 1, FN 1 -> 2/3, 2/3, 2/3
    #   micro:   TP 17, FP 4, FN 6 -> 17/21, 17/23, 34/44
    #   macro F1: the other eight labels sum to 8/9 + 2/3 + 2/3 + 3 = 47/9; (47/9 + 10/11 + 2/3) / 10 = 673/990
    _, _, report = messy
    in_text = report.to_dict()["in_text"]
    assert in_text["not_in_text"] == 2
    assert sorted(in_text["labels"]) == sorted(CLUE_EXPECTED)
    assert (in_text["labels"]["name"]["precision"], in_text["labels"]["name"]["f1"]) == pytest.approx(
        (1.0, 10 / 11), abs=1e-4
    )
    assert in_text["labels"]["company"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert in_text["labels"]["address"] == report.to_dict()["labels"]["address"]  # untouched
    micro = in_text["micro"]
    assert (micro["precision"], micro["recall"], micro["f1"]) == pytest.approx((17 / 21, 17 / 23, 34 / 44), abs=1e-4)
    assert in_text["macro"]["f1"] == pytest.approx(673 / 990, abs=1e-4)
    assert (
        "entities not in their sentence: 2; without them: micro F1 0.7727 (precision 0.8095, recall 0.7391)"
        in report.format()
    )


def test_messy_span_scores_match_hand_counts(messy):
    _, _, report = messy
    spans = report.to_dict()["seqeval"]
    assert sorted(spans["labels"]) == sorted(SPAN_EXPECTED)
    for label, (precision, recall, f1, support) in SPAN_EXPECTED.items():
        row = spans["labels"][label]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision, recall, f1), abs=1e-4), label
        assert row["support"] == support, label
    micro = spans["micro"]
    assert (micro["precision"], micro["recall"], micro["f1"]) == pytest.approx(SPAN_MICRO, abs=1e-4)
    assert spans["macro"]["f1"] == pytest.approx(SPAN_MACRO_F1, abs=1e-4)
    assert spans["dropped"] == {"not_in_text": 2, "overlapping": 1}
    assert spans["gold_nested_dropped"] == 0


def test_messy_errors_list_each_wrong_sentence(messy):
    _, _, report = messy
    errors = {row["index"]: row for row in report.errors()}
    assert sorted(errors) == [1, 2, 4, 5, 7, 8, 10, 13]
    assert errors[1]["false_positives"] == [["position", "博士"]]
    assert errors[1]["false_negatives"] == [["name", "叶老桂"]]
    assert errors[2] == {
        "index": 2,
        "line": 3,
        "text": "温格的球队2比1战胜曼联",
        "predict": "name:温格\ncompany:曼联",
        "unparseable": False,
        "false_positives": [["company", "曼联"]],
        "false_negatives": [["organization", "曼联"]],
    }
    assert errors[5]["unparseable"] is True
    assert errors[5]["false_positives"] == []
    assert errors[5]["false_negatives"] == [["address", "杭州"], ["scene", "西湖"]]
    assert errors[8]["false_negatives"] == [["movie", "《英雄》"]]
    assert errors[13]["false_positives"] == [["address", "上海"]]


def test_messy_scores_match_a_straightforward_recount(messy):
    """A second, independent count over the same data: sets per sentence, then plain formulas."""
    gold, _, report = messy
    tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
    for record_, predicted in zip(gold, MESSY_PARSED):
        gold_set = {(e.label, e.text) for e in record_.entities}
        predicted_set = set(predicted or [])
        for label, _ in gold_set & predicted_set:
            tp[label] += 1
        for label, _ in predicted_set - gold_set:
            fp[label] += 1
        for label, _ in gold_set - predicted_set:
            fn[label] += 1
    labels = set(tp) | set(fp) | set(fn)

    def prf(t, p, n):
        precision = t / (t + p) if t + p else 0.0
        recall = t / (t + n) if t + n else 0.0
        return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)

    scores = report.to_dict()
    for label in labels:
        assert prf(tp[label], fp[label], fn[label]) == pytest.approx(
            (scores["labels"][label]["precision"], scores["labels"][label]["recall"], scores["labels"][label]["f1"]),
            abs=1e-9,
        )
    micro = prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    assert micro == pytest.approx(
        (scores["micro"]["precision"], scores["micro"]["recall"], scores["micro"]["f1"]), abs=1e-9
    )
    macro = sum(prf(tp[label], fp[label], fn[label])[2] for label in labels) / len(labels)
    assert macro == pytest.approx(scores["macro"]["f1"], abs=1e-9)


def test_table_has_the_tutorial_layout(messy):
    _, _, report = messy
    lines = format_table(report.clue).splitlines()
    assert lines[0].split() == ["Label", "Precision", "Recall", "F1", "Support"]
    assert [line.split()[0] for line in lines[1:11]] == sorted(CLUE_EXPECTED)
    assert lines[7].split() == ["name", "0.8333", "0.8333", "0.8333", "6"]
    assert lines[11].split() == ["Micro", "Avg.", "0.7391", "0.7391", "0.7391", "23"]
    assert lines[12].split()[:2] == ["Macro", "Avg."]
    assert lines[12].split()[4] == "0.6627"
    assert len({len(line) for line in lines}) == 1  # columns are aligned


def test_duplicates_count_once_and_labels_are_separate():
    scores = score_clue(
        gold=[[("name", "张三"), ("name", "张三"), ("address", "北京")]],
        predicted=[[("name", "张三"), ("name", "张三"), ("name", "张三"), ("address", "北京"), ("scene", "北京")]],
    )
    assert (scores.labels["name"].tp, scores.labels["name"].fp, scores.labels["name"].fn) == (1, 0, 0)
    assert (scores.other_labels["scene"].tp, scores.other_labels["scene"].fp) == (0, 1)  # not gold's label
    assert scores.micro.precision == pytest.approx(2 / 3)


def test_invented_label_is_a_false_positive_but_stays_out_of_table_and_macro():
    # micro: TP 1, FP 1 (公司名), FN 0 -> P 1/2, R 1, F1 2/3; macro over the dataset's one label: 1.0
    scores = score_clue(gold=[[("company", "浙商银行")]], predicted=[[("company", "浙商银行"), ("公司名", "浙商银行")]])
    assert list(scores.labels) == ["company"]
    assert (scores.micro.precision, scores.micro.recall, scores.micro.f1) == pytest.approx((1 / 2, 1.0, 2 / 3))
    assert scores.macro_f1 == pytest.approx(1.0)
    assert scores.to_dict()["other_labels"] == {"公司名": 1}
    lines = format_table(scores).splitlines()
    assert [line.split()[0] for line in lines[1:2]] == ["company"]
    assert lines[-1] == "Other labels (not the dataset's; 1 false positives in micro, not in macro): 公司名 (1)"


def test_dataset_labels_come_from_the_caller():
    # schema name, address, movie; gold only has name. movie: nobody mentions it (in the table, not
    # averaged); address: predicted once wrongly (F1 0, averaged); name: F1 1. macro = (1 + 0) / 2
    scores = score_clue(
        gold=[[("name", "张三")]],
        predicted=[[("name", "张三"), ("address", "北京"), ("公司名", "x")]],
        labels=["name", "address", "movie"],
    )
    assert list(scores.labels) == ["address", "movie", "name"]
    assert scores.macro_f1 == pytest.approx(0.5)
    assert list(scores.other_labels) == ["公司名"]
    assert scores.micro.fp == 2


def test_prose_before_empty_json_adds_no_label():
    gold = [record("张三在北京", {"name": {"张三": [[0, 1]]}}), record("今天天气很好")]
    report = evaluate(gold, ["name:张三", "实体如下：[]"])
    data = report.to_dict()
    assert list(data["labels"]) == ["name"]
    assert data["other_labels"] == {}
    assert data["macro"]["f1"] == 1.0 and data["micro"]["f1"] == 1.0


def test_no_entities_anywhere_scores_zero_without_failing():
    gold = [record("今天天气很好")]
    report = evaluate(gold, ["无"])
    data = report.to_dict()
    assert data["labels"] == {}
    assert data["micro"]["f1"] == 0.0
    assert data["seqeval"]["micro"]["f1"] == 0.0
    assert report.errors() == []


def test_evaluate_refuses_a_count_mismatch():
    from nerft.errors import DataError

    with pytest.raises(DataError, match="1 predictions for 2 gold records"):
        evaluate([record("今天天气很好"), record("今天天气不错")], ["无"])


# Grounding rules of nerft.metrics.spans


def test_annotated_pair_takes_every_annotated_span():
    gold = record("曼联输了，曼联球迷很失望，曼联", {"organization": {"曼联": [[0, 1], [5, 6]]}})
    grounding = ground_mentions(gold, [("organization", "曼联")])
    assert grounding.spans == [(0, 1, "organization"), (5, 6, "organization")]  # not the third, unannotated one


def test_other_pairs_take_the_first_free_occurrence_longest_first():
    gold = record("北京大学在北京", {"organization": {"北京大学": [[0, 3]]}})
    grounding = ground_mentions(gold, [("address", "北京"), ("school", "北京大学")])
    assert grounding.spans == [(0, 3, "school"), (5, 6, "address")]
    assert grounding.not_in_text == [] and grounding.overlapping == []


def test_strings_not_in_the_sentence_or_overlapping_are_dropped_and_counted():
    gold = record("上海浦东新区很大")
    grounding = ground_mentions(
        gold, [("address", "上海"), ("address", "上海浦东新区"), ("address", "广州"), ("address", "上海")]
    )
    assert grounding.spans == [(0, 5, "address")]
    assert grounding.overlapping == [("address", "上海")]
    assert grounding.not_in_text == [("address", "广州")]


def test_nested_gold_keeps_the_outer_span():
    gold = record(
        "他写了《招商银行投资》一文",
        {"book": {"《招商银行投资》": [[3, 10]]}, "company": {"招商银行": [[4, 7]]}},
    )
    spans, dropped = gold_spans(gold)
    assert spans == [(3, 10, "book")] and dropped == 1
    assert bio_tags(len(gold.text), spans) == ["O", "O", "O", "B-book"] + ["I-book"] * 7 + ["O", "O"]
    # The gold answer itself scores 1.0: the inner company cannot be placed, as in gold.
    result = score_spans([gold], [gold.mentions()])
    assert result.micro["f1"] == 1.0
    assert (result.overlapping, result.gold_nested_dropped) == (1, 1)
