"""parse_output: every shape a model answers in, and the round trip of both prompt formats."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nerft.metrics.parse import END_TOKENS, parse_output
from nerft.prompts import CLUENER_LABELS, get_format


@pytest.mark.parametrize(
    "raw, expected",
    [
        # nerft's compact format
        ("name:张三\naddress:北京", [("name", "张三"), ("address", "北京")]),
        ("name：张三\naddress ： 北京 ", [("name", "张三"), ("address", "北京")]),
        ("  name : 张三  \n\n\ncompany:浙商银行\n", [("name", "张三"), ("company", "浙商银行")]),
        ("position:CEO:首席执行官", [("position", "CEO:首席执行官")]),  # split at the first colon only
        ("- name: 张三\n2. book: 《三体》", [("name", "张三"), ("book", "《三体》")]),
        ("name:张三\nname:张三", [("name", "张三"), ("name", "张三")]),  # duplicates kept; scoring dedups
        ("无", []),
        ("无。", []),
        ("None", []),
        ("", []),
        ("  \n ", []),
        # trailing special tokens, and whatever follows them
        ("name:张三<|im_end|>", [("name", "张三")]),
        ("name:张三<|im_end|><|endoftext|>", [("name", "张三")]),
        ("name:张三</s>", [("name", "张三")]),
        ("无<|im_end|>\n<|im_start|>user\nname:李四", []),
        ("<|endoftext|>", []),
        # the seed format: a JSON list of {"label", "text"}
        (
            '[{"label": "name", "text": "张三"}, {"label": "company", "text": "浙商银行"}]',
            [("name", "张三"), ("company", "浙商银行")],
        ),
        ("[]", []),
        ('[{"label": " name ", "text": " 张三 "}]', [("name", "张三")]),
        ('[{"type": "game", "entity": "DOTA2"}]', [("game", "DOTA2")]),
        ('{"label": "name", "text": "张三"}', [("name", "张三")]),
        # in fences, with prose around
        ('```json\n[{"label": "name", "text": "张三"}]\n```', [("name", "张三")]),
        (
            '这个句子包含以下实体：\n```json\n[{"label": "name", "text": "张三"}]\n```\n希望对你有帮助！',
            [("name", "张三")],
        ),
        ("识别结果如下：\n```\nname:张三\ncompany:浙商银行\n```\n以上。", [("name", "张三"), ("company", "浙商银行")]),
        ('结果：[{"label": "name", "text": "张三"}] 共一个实体。', [("name", "张三")]),
        ('The entities are [{"label": "scene", "text": "西湖"}].', [("scene", "西湖")]),
        ("以下是识别结果：\nname:张三", [("name", "张三")]),
        # dicts: {label: [texts]}, {label: text}, CLUE's {label: {text: spans}}, a whole CLUE record
        ('{"name": ["张三", "李四"], "address": ["北京"]}', [("name", "张三"), ("name", "李四"), ("address", "北京")]),
        ('{"name": "张三", "movie": []}', [("name", "张三")]),
        (
            '{"name": {"张三": [[0, 1]]}, "address": {"北京": [[3, 4], [9, 10]]}}',
            [("name", "张三"), ("address", "北京")],
        ),
        ('{"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}', [("name", "张三")]),
        ("{}", []),
        # a wrapper object is looked through
        ('{"entities": [{"label": "name", "text": "张三"}]}', [("name", "张三")]),
        ('{"result": {"name": ["张三"]}}', [("name", "张三")]),
        # a list cut off by the token limit: the complete objects before the cut
        ('[{"label": "name", "text": "张三"}, {"label": "company", "text": "浙商', [("name", "张三")]),
        (
            '```json\n[\n  {"label": "name", "text": "张三"},\n  {"label": "book", "text": "三体"},\n  {"lab',
            [("name", "张三"), ("book", "三体")],
        ),
        # a compact entity that looks like JSON but is not stays an entity
        ("book:{三体}", [("book", "{三体}")]),
        # prose around a JSON answer never becomes a label (it was read as a mention "实体如下: []")
        ("实体如下：[]", []),
        ("name:[]", []),
        ('实体如下：[{"label": "name", "text": "张三"}]', [("name", "张三")]),
        ("结果：[1, 2]", None),
        ("name:张三\n备注：[]", [("name", "张三")]),
        # think blocks are skipped before parsing (Qwen3's empty one was unparseable)
        ("<think>\n\n</think>\n\n无", []),
        ("<think>\n句子里有一个人名。\n</think>\n\nname:张三", [("name", "张三")]),
        ('<think>x</think><think>y</think>[{"label": "name", "text": "张三"}]', [("name", "张三")]),
        ("<think>\n还在想，token 用完了", None),
        ("name:<think>", [("name", "<think>")]),  # only a leading block is thinking
        # brackets nested deeper than Python's stack (a looping model) are unparseable, not a RecursionError
        ("[" * 100000, None),
        ("[" * 100000 + "]" * 100000, None),
        ("结果：" + "[" * 5000 + "]" * 5000, None),
        # a base model's Chinese label names parse (and score as wrong labels)
        ("这个句子包含以下实体：\n\n公司名：浙商银行", [("公司名", "浙商银行")]),
    ],
)
def test_parse_output(raw, expected):
    assert parse_output(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "I cannot help with that.",
        "这句话里没有人名。",
        '[{"label": "na',  # cut off before one complete object
        '["张三", "李四"]',  # strings without labels
        "[1, 2, 3]",
        "```\nI am not sure what you mean.\n```",
        '{"name": 3}',
    ],
)
def test_unparseable_answers_are_none(raw):
    assert parse_output(raw) is None


# Labels are single words (validate.py refuses others); entities are any text that is not empty,
# has no line break or outer whitespace, holds no end-of-turn token, does not open with a think
# block and is not a JSON list or object (after a label, that is the answer's JSON, not a name).
labels = st.one_of(st.sampled_from(CLUENER_LABELS), st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True))
entities = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=20)
    .filter(lambda text: text == text.strip() and text != "")
    .filter(lambda text: not any(token in text for token in END_TOKENS))
    .filter(lambda text: not text.startswith("<think>") and not _is_json_container(text))
)


def _is_json_container(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (list, dict))
    except ValueError:
        return False


mention_lists = st.lists(st.tuples(labels, entities), max_size=8)


@settings(max_examples=300, deadline=None)
@given(mention_lists)
def test_compact_round_trip(mentions):
    assert parse_output(get_format("compact").render_output(mentions)) == mentions


@settings(max_examples=300, deadline=None)
@given(mention_lists)
def test_seed_round_trip(mentions):
    assert parse_output(get_format("seed").render_output(mentions)) == mentions


@settings(max_examples=100, deadline=None)
@given(
    mention_lists,
    st.sampled_from(["compact", "seed"]),
    st.sampled_from(["<|im_end|>", "<|im_end|><|endoftext|>", "</s>", "\n"]),
)
def test_round_trip_survives_end_tokens(mentions, prompt, ending):
    assert parse_output(get_format(prompt).render_output(mentions) + ending) == mentions


@settings(max_examples=100, deadline=None)
@given(mention_lists)
def test_seed_round_trip_in_a_fence_with_prose(mentions):
    rendered = json.dumps([{"label": label, "text": text} for label, text in mentions], ensure_ascii=False, indent=2)
    assert parse_output(f"好的，结果如下：\n```json\n{rendered}\n```\n如有疑问请告诉我。") == mentions


# --- what prepare writes, the parser reads back --------------------------------------------------

HOSTILE_PIECES = ["[]", "{}", '{"a": 1}', "[1]", '[{"label": "name", "text": "x"}', "<|im_end|>", "</s>", "<think>"]
HOSTILE_PIECES += ["```", "无", "none", "name:", "：", " ", "\\", '"', "{三体}", "[x"]
any_entities = (
    st.lists(
        st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(st.characters(blacklist_categories=("Cs",)), max_size=4)),
        min_size=1,
        max_size=3,
    )
    .map("".join)
    .filter(bool)
)


@st.composite
def clue_records(draw) -> dict:
    """A CLUE NER record whose entities (any text, JSON-like and chat tokens weighted in) lie one
    after another in its sentence, with filler between them."""
    text, label = "", {}
    for entity_label, entity in draw(st.lists(st.tuples(labels, any_entities), min_size=1, max_size=4)):
        text += draw(st.sampled_from(["", "在", "和 "]))
        label.setdefault(entity_label, {}).setdefault(entity, []).append([len(text), len(text) + len(entity) - 1])
        text += entity
    return {"text": text + "。", "label": label}


@settings(max_examples=60, deadline=None)
@given(st.lists(clue_records(), min_size=1, max_size=4), st.sampled_from(["compact", "seed"]))
def test_prepare_writes_only_answers_the_parser_reads_back(tmp_path_factory, records, prompt):
    """For any records, prepare refuses the ones whose answer would read back otherwise, naming
    file and line, and for every record it writes, parse(format(record)) == record (its entities'
    outer whitespace aside, which prepare warns about)."""
    from nerft.data.load import iter_checked
    from nerft.data.prepare import prepare_dataset
    from nerft.errors import DataError

    folder = tmp_path_factory.mktemp("prepare")
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    try:
        result = prepare_dataset(train=data, out_dir=folder / "out", val_size=0, prompt=prompt, skip_invalid=True)
    except DataError as exc:  # every record refused
        assert f"{data}: no valid records" in str(exc)
        written = []
    else:
        written = json.loads((folder / "out" / result.splits["train"].file).read_text(encoding="utf-8"))
    valid = {checked.record.line for checked in iter_checked(data) if checked.ok}  # without the answer's check
    checked = list(iter_checked(data, fmt=get_format(prompt)))
    kept = [c.record for c in checked if c.ok]
    assert len(written) == len(kept)
    for example, record in zip(written, kept):
        # the parser strips an entity's outer whitespace, which prepare warns about
        assert parse_output(example["output"]) == [(label, text.strip()) for label, text in record.mentions()]
    for refused in (c for c in checked if not c.ok and c.record is not None and c.record.line in valid):
        [finding] = refused.errors  # named by its file and line, with the entity or the answer
        assert str(finding).startswith(f"{data}:{refused.record.line}: error: ") and "reads back as" in finding.reason


@pytest.mark.parametrize(
    "entity, prompt, refused",
    [
        ("[]", "compact", "reads back as no entity"),
        ('{"a": 1}', "compact", "reads back as nothing (unparseable)"),
        ("a<|im_end|>b", "compact", "reads back as name:'a'"),
        ("a<|im_end|>b", "seed", "reads back as nothing (unparseable)"),
        ("[]", "seed", None),
        ('{"a": 1}', "seed", None),
        ("{三体}", "compact", None),
    ],
)
def test_entities_that_look_like_json_or_chat_tokens(entity, prompt, refused):
    fmt = get_format(prompt)
    problem = fmt.unreadable([("name", entity)])
    if refused is None:
        assert problem is None and parse_output(fmt.render_output([("name", entity)])) == [("name", entity)]
    else:
        assert problem.startswith(f"name {entity!r}: the {prompt} answer ") and problem.endswith(refused)


LONG = "9" * 5_000  # longer than Python converts to an int (4,300 digits)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (f"name:[{LONG}]", None),
        (f"[{LONG}]", None),
        (f'x {{"a": {LONG}}}', None),
        (f'[{{"label": "a", "text": "b"}}, {LONG}', [("a", "b")]),  # cut off: the complete items
        (f"name:张三\nbook:[{LONG}]", [("name", "张三")]),
    ],
)
def test_an_answer_with_an_integer_too_long_to_convert_is_read_or_unparseable(raw, expected):
    assert parse_output(raw) == expected
