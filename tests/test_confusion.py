"""Mistake kinds and the label confusion table, against counts worked out by hand."""

from nerft.data.records import CluenerRecord, Entity
from nerft.metrics.clue import score_clue
from nerft.metrics.confusion import Mistake, classify_sentence, confusion


def record(text, *entities):
    return CluenerRecord(text=text, entities=sorted(Entity(s, e, label, text[s : e + 1]) for s, e, label in entities))


GOLD = [
    record("浙商银行企业信贷部叶老桂博士", (0, 3, "company"), (9, 11, "name")),
    record("京东与沃尔玛合作。", (0, 1, "company"), (3, 5, "company")),
    record("他读了《围城》。", (4, 5, "book")),
    record("张三在北京。", (0, 1, "name"), (3, 4, "address")),
]
PREDICTED = [
    [("organization", "浙商银行"), ("name", "老桂")],  # wrong label; wrong boundary
    [("company", "京东"), ("address", "北京")],  # correct; spurious (not in the sentence); 沃尔玛 missed
    [
        ("book", "《围城》"),
        ("movie", "围城"),
    ],  # the same text first: wrong label; then 《围城》 has no gold left: spurious
    [],  # an unparseable answer: both missed
]


def test_each_wrong_pair_gets_one_kind():
    kinds = [classify_sentence(g, p).mistakes for g, p in zip(GOLD, PREDICTED)]
    assert kinds[0] == [
        Mistake("wrong label", ("company", "浙商银行"), ("organization", "浙商银行")),
        Mistake("wrong boundary", ("name", "叶老桂"), ("name", "老桂")),
    ]
    assert kinds[1] == [
        Mistake("missed", gold=("company", "沃尔玛")),
        Mistake("spurious", predicted=("address", "北京")),
    ]
    assert kinds[2] == [
        Mistake("wrong label", ("book", "围城"), ("movie", "围城")),
        Mistake("spurious", predicted=("book", "《围城》")),
    ]
    assert kinds[3] == [Mistake("missed", gold=("name", "张三")), Mistake("missed", gold=("address", "北京"))]
    assert classify_sentence(GOLD[1], PREDICTED[1]).correct == [("company", "京东")]


def test_a_boundary_candidate_of_the_gold_label_is_taken_first():
    gold = record("叶老桂博士说", (0, 2, "name"))
    mistakes = classify_sentence(gold, [("position", "叶老桂博士"), ("name", "老桂")]).mistakes
    assert mistakes == [
        Mistake("wrong boundary", ("name", "叶老桂"), ("name", "老桂")),
        Mistake("spurious", predicted=("position", "叶老桂博士")),
    ]


def test_a_string_elsewhere_in_the_sentence_is_not_a_boundary_error():
    gold = record("张三和张三丰", (0, 1, "name"))  # only the first 张三 is annotated... as 张三
    # 张三丰 at 3..5 does not overlap 0..1: spurious, and 张三 missed
    assert [m.kind for m in classify_sentence(gold, [("name", "张三丰")]).mistakes] == ["missed", "spurious"]


def test_the_confusion_table_by_hand():
    table, sentences = confusion(GOLD, PREDICTED)
    assert table.to_dict() == {
        "matrix": {"book": {"movie": 1}, "company": {"company": 1, "organization": 1}},
        "boundary": {"name": {"name": 1}},
        "missed": {"address": 1, "company": 1, "name": 1},
        "spurious": {"address": 1, "book": 1},
    }
    rows, columns, counts = table.table()
    assert rows == ["address", "book", "company", "name", "spurious"]
    assert columns == ["address", "book", "company", "movie", "name", "organization", "wrong boundary", "missed"]
    assert counts == [
        [0, 0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 1, 0, 1],
        [0, 0, 0, 0, 0, 0, 1, 1],
        [1, 1, 0, 0, 0, 0, None, None],
    ]
    assert len(sentences) == 4


def test_each_row_adds_up_to_the_clue_support_and_the_diagonal_to_tp():
    clue = score_clue([g.mentions() for g in GOLD], PREDICTED)
    table, _ = confusion(GOLD, PREDICTED)
    rows, columns, counts = table.table()
    for label, row in zip(rows[:-1], counts[:-1]):
        assert sum(row) == clue.labels[label].support
        assert (table.matrix.get(label, {}).get(label, 0)) == clue.labels[label].tp
    # every false positive is a wrong label, a wrong boundary or spurious
    # (movie and organization are not gold labels: CLUE counts their false positives apart)
    assert {label: counts.fp for label, counts in clue.other_labels.items()} == {"movie": 1, "organization": 1}
    fp = sum(c.fp for c in (*clue.labels.values(), *clue.other_labels.values()))
    wrong = sum(n for g, row in table.matrix.items() for p, n in row.items() if p != g)
    assert fp == wrong + sum(sum(r.values()) for r in table.boundary.values()) + sum(table.spurious.values()) == 5
