"""Grounded answers: the grammar of an answer, its regular expression for vLLM, token bytes and
the confidence of each entity, checked by hand; the hf engine's grounded decoding on the tiny runs."""

import itertools
import json
import math

import pytest
import regex

from nerft.data.load import load_records
from nerft.data.records import CluenerRecord
from nerft.inference.engines import ChatRequest, Generation
from nerft.inference.engines.openai import answer_tokens
from nerft.inference.grounding import (
    MAX_ITEMS,
    AnswerGrammar,
    answer_confidence,
    grounded_regex,
    item_confidences,
    token_bytes_table,
)
from nerft.inference.predictions import prediction_row
from nerft.inference.source import resolve_model
from nerft.metrics.parse import parse_output
from nerft.prompts import get_format
from nerft.runfolder import load_run

COMPACT, SEED = get_format("compact"), get_format("seed")
SENTENCE = "张三在北京大学读书"


@pytest.mark.parametrize(
    "answer, ok, complete",
    [
        ("", True, False),
        ("无", True, True),
        ("nam", True, False),
        ("name:", True, False),
        ("name:张", True, True),  # "张" is a substring: the answer may end here
        ("name:张三", True, True),
        ("name:张三\n", True, False),  # a newline promises another item
        ("name:张三\norganization:北京大学", True, True),
        ("name:张三\nname:张三", True, True),  # may still become 张三丰..., or end: a repeat ends the loop
        ("name:张三\nname:张三\n", False, False),  # the repeat is complete: refused
        ("foo:", False, False),  # not a label of the run
        ("name:李", False, False),  # not in the sentence
        ("name:张三\n\n", False, False),
        ("无\n", False, False),
    ],
)
def test_compact_grammar(answer, ok, complete):
    walk = AnswerGrammar(COMPACT, SENTENCE).walk(answer.encode())
    assert (walk.ok, walk.complete) == (ok, complete)


def test_hf_ends_an_answer_that_goes_on_after_a_repeated_item():
    import torch

    from nerft.inference.engines.hf import GroundedDecoding

    vocab = [b"name", b":", "张三".encode(), b"\n", "丰".encode(), "在".encode(), b""]  # 6: the end token
    answer = [0, 1, 2, 3, 0, 1, 2]  # name:张三\nname:张三, the second time
    decoding = GroundedDecoding([AnswerGrammar(COMPACT, SENTENCE)], 0, vocab, [6])

    def pick(scores: list[float]) -> int:
        return int(decoding(torch.tensor([answer]), torch.tensor([scores], dtype=torch.float)).argmax())

    assert pick([0, 0, 0, 5, 0, 4, 1]) == 6  # wants "\n" (the loop goes on): ends instead of writing 张三在
    assert pick([0, 0, 0, 1, 0, 5, 2]) == 5  # wants 在: 张三在 is a new entity, grounded, written
    assert pick([0, 0, 0, 1, 5, 0, 2]) == 6  # wants 丰 (not in the sentence): the best allowed is the end


def test_a_token_may_end_inside_a_character():
    grammar = AnswerGrammar(COMPACT, SENTENCE)
    half = "name:张".encode()[:-1]  # "张" is three bytes: two of them written
    assert grammar.allows(half) and not grammar.complete(half)
    assert not grammar.allows(b"name:" + "李".encode()[:2])  # no character of the sentence starts so


def test_seed_grammar_reads_json_escapes_against_the_sentence():
    grammar = AnswerGrammar(SEED, '他说"你好"')
    quoted = '[{"label": "name", "text": "\\"你好\\""}'
    assert grammar.allows(b"[") and grammar.complete(b"[]")
    assert grammar.allows(quoted.encode()) and not grammar.complete(quoted.encode())
    walk = grammar.walk((quoted + "]").encode())
    assert walk.complete and [(item.label, item.text) for item in walk.items] == [("name", '"你好"')]
    assert not grammar.allows(b'[{"label": "name", "text": "x')
    assert not grammar.allows(b'[{"label": "person')
    assert not grammar.allows(b"[]]")
    assert grammar.complete(SEED.render_output([("name", '"你好"'), ("name", "他")]).encode())


def test_items_are_bounded():
    grammar = AnswerGrammar(COMPACT, "甲乙丙", max_items=2)
    assert grammar.complete("name:甲\nname:乙".encode())
    assert not grammar.allows("name:甲\nname:乙\nname:丙".encode())


def answers_to_try(fmt, text):
    """Complete answers, grounded or not: every pair of items from a few labels and strings."""
    strings = ["张三", "北京大学", "北京", "李四", "书"]
    items = [(label, entity) for label in ("name", "address", "person") for entity in strings]
    yield fmt.render_output([])
    for count in (1, 2):
        for chosen in itertools.permutations(items, count):
            yield fmt.render_output(list(chosen))


@pytest.mark.parametrize("fmt", [COMPACT, SEED], ids=["compact", "seed"])
def test_vllm_regex_accepts_exactly_the_grounded_answers(fmt):
    # The regular expression cannot forbid a repeated item; everything else it decides as the grammar does.
    pattern = regex.compile(grounded_regex(fmt, SENTENCE))
    grammar = AnswerGrammar(fmt, SENTENCE)
    tried = 0
    for answer in answers_to_try(fmt, SENTENCE):
        tried += 1
        assert bool(pattern.fullmatch(answer)) == grammar.complete(answer.encode()), answer
    assert tried > 200
    assert pattern.fullmatch(fmt.render_output([("name", "张三"), ("address", "北京大学")]))
    assert not pattern.fullmatch(fmt.render_output([("name", "李四")]))


def test_the_regex_bounds_the_items_and_has_no_entity_for_an_empty_sentence():
    pattern = regex.compile(grounded_regex(COMPACT, "甲乙"))
    assert pattern.fullmatch("\n".join(["name:甲"] * MAX_ITEMS))
    assert not pattern.fullmatch("\n".join(["name:甲"] * (MAX_ITEMS + 1)))
    assert grounded_regex(COMPACT, "") == "无"


def test_confidence_is_the_probability_of_an_item_s_tokens_and_its_terminator():
    tokens = [
        (b"name", -0.1),
        (b":", 0.0),
        ("张三".encode(), -0.2),
        (b"\n", -0.3),  # ends 张三: part of its confidence
        (b"address", -0.5),
        (b":", 0.0),
        ("北京".encode(), -0.1),
        (b"", -0.05),  # the end token ends 北京
    ]
    assert item_confidences(COMPACT, tokens) == {
        ("name", "张三"): round(math.exp(-0.6), 6),
        ("address", "北京"): round(math.exp(-0.65), 6),
    }
    assert answer_confidence(tokens) == round(math.exp(-1.25), 6)
    # A token across two items counts for both.
    merged = [(b"name:", -0.1), ("张三\naddress".encode(), -0.2), (":北京".encode(), -0.3)]
    assert item_confidences(COMPACT, merged) == {
        ("name", "张三"): round(math.exp(-0.3), 6),
        ("address", "北京"): round(math.exp(-0.5), 6),
    }
    assert item_confidences(COMPACT, [("这是实体".encode(), -0.1)]) == {}  # not in the format


def test_prediction_rows_carry_confidences_when_the_engine_gave_log_probabilities():
    record = CluenerRecord(text=SENTENCE, labelled=False)
    tokens = ((b"name:", -0.1), ("张三".encode(), -0.2), (b"", -0.1))
    row = prediction_row(record, Generation("name:张三", "stop", tokens), fmt=COMPACT)
    assert row["entities"] == [
        {
            "label": "name",
            "text": "张三",
            "start": 0,
            "end": 2,
            "ambiguous": False,
            "confidence": round(math.exp(-0.4), 6),
        }
    ]
    assert row["confidence"] == round(math.exp(-0.4), 6)
    plain = prediction_row(record, Generation("name:张三", "stop"), fmt=COMPACT)
    assert plain["entities"][0]["confidence"] is None and plain["confidence"] is None


def test_openai_logprobs_become_tokens_and_an_end_token_after_the_answer():
    content = [
        {"token": "name", "logprob": -0.1, "bytes": list(b"name")},
        {"token": ":", "logprob": 0.0, "bytes": [58]},
        {"token": "张", "logprob": -0.2, "bytes": list("张".encode())},
        {"token": "<|im_end|>", "logprob": -0.05, "bytes": list(b"<|im_end|>")},
    ]
    assert answer_tokens({"logprobs": {"content": content}}, "name:张") == (
        (b"name", -0.1),
        (b":", 0.0),
        ("张".encode(), -0.2),
        (b"", -0.05),
    )
    assert answer_tokens({"logprobs": {"content": content}}, "name:李") is None  # they do not spell it
    assert answer_tokens({"logprobs": None}, "name:张") is None


def test_tokens_a_server_spells_as_a_replacement_character_take_the_bytes_between_whole_tokens():
    # "《" is e3 80 8a, written as two tokens; vLLM's `bytes` for each is U+FFFD's (ef bf bd)
    fffd = list("\ufffd".encode())
    content = [
        {"token": "book", "logprob": -0.1, "bytes": list(b"book")},
        {"token": ":", "logprob": 0.0, "bytes": [58]},
        {"token": "\ufffd", "logprob": -0.2, "bytes": fffd},
        {"token": "\ufffd", "logprob": -0.3, "bytes": fffd},
        {"token": "围城", "logprob": -0.4, "bytes": list("围城".encode())},
        {"token": "", "logprob": -0.5, "bytes": []},
    ]
    tokens = answer_tokens({"logprobs": {"content": content}}, "book:《围城")
    assert [data for data, _ in tokens] == [b"book", b":", b"\xe3\x80", b"\x8a", "围城".encode(), b""]
    assert [logprob for _, logprob in tokens] == [-0.1, 0.0, -0.2, -0.3, -0.4, -0.5]
    # at the end of an answer cut inside a character, and with a whole character beside the part
    content[4:] = [{"token": "围\ufffd", "logprob": -0.4, "bytes": list("围".encode()) + fffd}]
    cut = answer_tokens({"logprobs": {"content": content}}, "book:《围\ufffd")
    assert [data for data, _ in cut][2:] == [b"\xe3\x80", b"\x8a", "围\ufffd".encode()]
    assert answer_tokens({"logprobs": {"content": content}}, "book:abc") is None  # ASCII is never part of a character
    # vLLM's server spells the tokens before a character's last one as "" (no bytes), and a token
    # that ends one character and holds all of the next but one byte as U+FFFD + that character
    served = [
        {"token": "book:", "logprob": -0.1, "bytes": list(b"book:")},
        {"token": "", "logprob": -0.2, "bytes": []},
        {"token": "", "logprob": -0.3, "bytes": []},
        {"token": "\u300a", "logprob": -0.4, "bytes": list("《".encode())},
        {"token": "", "logprob": -0.5, "bytes": []},
        {"token": "\ufffd城", "logprob": -0.6, "bytes": fffd + list("城".encode())},
        {"token": "", "logprob": -0.7, "bytes": []},
        {"token": "\u300b", "logprob": -0.8, "bytes": list("》".encode())},
        {"token": "<|im_end|>", "logprob": -0.9, "bytes": list(b"<|im_end|>")},
    ]
    tokens = answer_tokens({"logprobs": {"content": served}}, "book:《围城》")
    assert b"".join(data for data, _ in tokens) == "book:《围城》".encode()
    # the "" before "\ufffd城" stays b"" where 围 starts (inside the same item: the same confidence)
    assert [data for data, _ in tokens][4:] == [b"", "围城".encode(), b"", "》".encode(), b""]
    assert answer_tokens({}, "name:张") is None


# ---- token bytes, and the hf engine --------------------------------------------------------------


def test_token_bytes_spell_what_the_tokenizer_decodes(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    table = token_bytes_table(tokenizer)
    text = "name:彭小军\norganization:曼联 ok"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(table[i] for i in ids) == text.encode()
    assert table[tokenizer.convert_tokens_to_ids("<|im_end|>")] is None


def test_token_bytes_of_the_qwen2_tokenizer(qwen2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen2_tokenizer_dir)
    table = token_bytes_table(tokenizer)
    text = "company:浙商银行\nname:叶老桂 — 龘䨻"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(table[i] for i in ids) == text.encode()
    partial = [table[i] for i in ids if table[i] and not _utf8(table[i])]
    assert partial  # some Qwen2 tokens hold part of a character: why the grammar works on bytes


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.fixture(scope="module")
def dev_records(sample_dir):
    return load_records(sample_dir / "dev.jsonl") + load_records(sample_dir / "test.jsonl")


def hf_generations(run_dir, records, *, grounded: bool):
    from nerft.inference.engines.hf import HFEngine

    run = load_run(run_dir)
    fmt = run.prompt_format()
    engine = HFEngine(resolve_model(run), fmt, batch_size=4, grounded=grounded)
    try:
        return list(engine.generate([ChatRequest.for_text(fmt, record.text) for record in records]))
    finally:
        engine.close()


def test_grounded_hf_answers_of_a_random_model_name_only_the_sentence_s_strings(tiny_run, dev_records, one_thread):
    fmt = load_run(tiny_run).prompt_format()
    free = hf_generations(tiny_run, dev_records, grounded=False)
    grounded = hf_generations(tiny_run, dev_records, grounded=True)

    # Unconstrained, the random model writes anything; grounded, every item is from the sentence.
    def ungrounded(record, text):
        mentions = parse_output(text)
        return mentions is None or any(
            label not in fmt.labels or entity not in record.text for label, entity in mentions
        )

    assert sum(ungrounded(record, g.text) for record, g in zip(dev_records, free)) >= len(dev_records) // 2
    for record, generation in zip(dev_records, grounded):
        grammar = AnswerGrammar(fmt, record.text)
        assert generation.tokens is not None
        answer = b"".join(data for data, _ in generation.tokens)  # a cut answer may end inside a character
        assert answer.decode("utf-8", "replace") == generation.text
        walk = grammar.walk(answer)
        assert walk.ok, generation.text
        assert walk.complete or generation.finish_reason == "length", generation.text  # it ends only where it may
        items = [(item.label, item.text) for item in walk.items]
        assert len(items) == len(set(items)) and all(text in record.text for _, text in items)
        confidences = item_confidences(fmt, generation.tokens)
        assert all(0.0 <= value <= 1.0 for value in confidences.values())


def test_grounding_leaves_a_learned_model_s_answers_as_they_are(learned_run, sample_dir, one_thread):
    train = load_records(sample_dir / "train.jsonl")
    free = hf_generations(learned_run, train, grounded=False)
    grounded = hf_generations(learned_run, train, grounded=True)
    assert [g.text for g in grounded] == [g.text for g in free]
    fmt = load_run(learned_run).prompt_format()
    for generation in grounded:  # a model that learned its answers is sure of them
        assert min(item_confidences(fmt, generation.tokens).values(), default=1.0) > 0.5, generation.text


def test_bench_grounding_prints_a_row_per_engine_and_grounding(learned_run, sample_dir, tmp_path, capsys, one_thread):
    from conftest import load_script

    bench = load_script("bench_grounding")
    gold = sample_dir / "dev.jsonl"
    assert (
        bench.main(
            [
                "--run",
                str(learned_run),
                "--gold",
                str(gold),
                "--out",
                str(tmp_path),
                "--rows",
                "hf:0,hf:1",
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| hf")]
    assert [line.split(" | ")[1] for line in lines] == ["no", "yes"]
    assert lines[1].split(" | ")[2] == "0"  # grounded: no entity outside its sentence
    report = json.loads((tmp_path / "hf-grounded" / "report.json").read_text())
    assert report["prediction"]["engine"]["grounded"] is True and report["records"] == len(load_records(gold))
