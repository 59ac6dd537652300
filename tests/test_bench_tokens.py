"""Token counting through the Qwen chat template, and the token benchmark on a few records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from benchlib.roundtrip import round_trip_scores
from benchlib.tokens import SampleTokens, count_sample_tokens, packing_cutoff_len, qwen_segments, summarize_tokens
from conftest import load_script

from nerft.data.load import load_records
from nerft.data.records import CluenerRecord, Entity
from nerft.prompts import get_format

ROOT = Path(__file__).resolve().parents[1]

COMPACT_EXAMPLE = {"instruction": "浙商银行", "input": "", "output": "company:浙商银行", "system": "NER"}
SPECIAL = re.compile(r"<\|im_start\|>|<\|im_end\|>|.", re.DOTALL)


class CharTokenizer:
    """One token per special token and per other character: counts a reader can do by hand."""

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False  # LLaMA-Factory encodes template slots without them
        return {"input_ids": [[0] * len(SPECIAL.findall(text)) for text in texts]}


def test_segments_follow_llamafactory_qwen_template():
    prompt, response = qwen_segments(COMPACT_EXAMPLE)
    assert prompt == [
        "<|im_start|>system\nNER<|im_end|>\n",
        "<|im_start|>user\n浙商银行<|im_end|>\n<|im_start|>assistant\n",
    ]
    assert response == ["company:浙商银行<|im_end|>\n"]


def test_segments_join_instruction_and_input_and_default_the_system_prompt():
    prompt, _ = qwen_segments({"instruction": "抽取实体", "input": "浙商银行", "output": "[]", "system": ""})
    assert (
        prompt[0]
        == "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    )
    assert prompt[1] == "<|im_start|>user\n抽取实体\n浙商银行<|im_end|>\n<|im_start|>assistant\n"


def test_counts_by_hand_with_a_character_tokenizer():
    # system: <|im_start|> + "system\nNER" (10) + <|im_end|> + "\n" = 13
    # user:   <|im_start|> + "user\n浙商银行" (9) + <|im_end|> + "\n" + <|im_start|> + "assistant\n" (10) = 23
    # answer: "company:浙商银行" (12) + <|im_end|> + "\n" = 14
    empty = {"instruction": "浙", "input": "", "output": "", "system": "NER"}  # 13 + 20, answer 2
    counts = list(count_sample_tokens(CharTokenizer(), [COMPACT_EXAMPLE, empty, COMPACT_EXAMPLE], batch_size=2))
    assert counts == [SampleTokens(36, 14), SampleTokens(33, 2), SampleTokens(36, 14)]
    summary = summarize_tokens(counts)
    assert (summary.samples, summary.prompt_tokens, summary.response_tokens, summary.max_tokens) == (3, 105, 30, 50)
    assert summary.mean_tokens == 45.0
    assert summary.response_share == 30 / 135


def test_real_qwen2_counts(qwen2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen2_tokenizer_dir))
    # <|im_start|> system \n NER <|im_end|> \n: the Qwen2 ids are 151644 8948 198 13896 151645 198.
    assert tokenizer(qwen_segments(COMPACT_EXAMPLE)[0][:1], add_special_tokens=False)["input_ids"] == [
        [151644, 8948, 198, 13896, 151645, 198]
    ]
    (count,) = count_sample_tokens(tokenizer, [COMPACT_EXAMPLE])
    assert count.response == len(tokenizer.encode("company:浙商银行", add_special_tokens=False)) + 2


@pytest.mark.slow
def test_counts_and_packing_match_llamafactory(qwen2_tokenizer_dir, sample_dir):
    """The counts are LLaMA-Factory's own: its alpaca converter and qwen template, on the sample data."""
    from benchlib.padding import greedy_knapsack
    from llamafactory.data.converter import AlpacaDatasetConverter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.data.processor.processor_utils import greedy_knapsack as llamafactory_knapsack
    from llamafactory.data.template import TEMPLATES
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen2_tokenizer_dir))
    converter = AlpacaDatasetConverter(DatasetAttr("file", "x", system="system"), DataArguments())
    records = load_records(sample_dir / "train.jsonl")
    for name in ("seed", "compact"):
        examples = [get_format(name).example(record) for record in records]
        ours = list(count_sample_tokens(tokenizer, examples))
        for example, count in zip(examples, ours):
            converted = converter(example)
            prompt_ids, response_ids = TEMPLATES["qwen"].encode_oneturn(
                tokenizer, converted["_prompt"] + converted["_response"], converted["_system"]
            )
            assert (count.prompt, count.response) == (len(prompt_ids), len(response_ids)), example
        lengths = [count.total for count in ours]
        assert sorted(map(sorted, greedy_knapsack(lengths, 300))) == sorted(
            map(sorted, llamafactory_knapsack(list(lengths), 300))
        )


def test_pack_length_is_nerft_trains_choice():
    # mean 20, longest 30: 4 mean samples (80) hold the longest (30 + 1), rounded up to a multiple of 8
    assert packing_cutoff_len([10, 20, 30], 4) == 80
    # one sample per pack would not hold the longest: longest + 1 = 61 -> 64
    assert packing_cutoff_len([10, 20, 60], 1) == 64


def test_round_trip_of_compact_answers_is_lossless():
    records = [
        CluenerRecord("浙商银行企业", [Entity(0, 3, "company", "浙商银行")]),
        CluenerRecord("没有实体。"),
        # an entity named twice at two positions is one mention; one with a colon stays whole
        CluenerRecord("A:B和A:B", [Entity(0, 2, "game", "A:B"), Entity(4, 6, "game", "A:B")]),
    ]
    scores = round_trip_scores(records, get_format("compact"))
    assert (scores["gold"], scores["f1"], scores["differing"], scores["unparseable"]) == (2, 1.0, 0, 0)


def test_round_trip_reports_what_a_lossy_parser_drops():
    records = [
        CluenerRecord("浙商银行和北京", [Entity(0, 3, "company", "浙商银行"), Entity(5, 6, "address", "北京")]),
        CluenerRecord("北京", [Entity(0, 1, "address", "北京")]),
    ]

    def first_line_only(answer):  # loses every mention after the first
        return [tuple(answer.split("\n")[0].split(":", 1))]

    scores = round_trip_scores(records, get_format("compact"), parse=first_line_only)
    # gold: 3 mentions; parsed back: 2, both right -> P 1, R 2/3, F1 0.8
    assert (scores["gold"], scores["precision"], scores["recall"]) == (3, 1.0, 2 / 3)
    assert scores["f1"] == pytest.approx(0.8)
    assert scores["differing"] == 1
    assert scores["examples"] == [
        {"answer": "company:浙商银行\naddress:北京", "missing": [("address", "北京")], "extra": []}
    ]


def test_bench_tokens_script_on_sample_data(qwen2_tokenizer_dir, sample_dir, capsys):
    script = load_script("bench_tokens")
    code = script.main(
        [
            "--train",
            str(sample_dir / "train.jsonl"),
            "--tokenizer",
            str(qwen2_tokenizer_dir),
            "--batch-size",
            "4",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    seed, compact = result["formats"]["seed"], result["formats"]["compact"]
    assert seed["tokens"]["samples"] == compact["tokens"]["samples"] == 32
    assert result["ratios"]["tokens_per_sample"] == round(
        compact["tokens"]["mean_tokens"] / seed["tokens"]["mean_tokens"], 4
    )
    assert result["ratios"]["tokens_per_sample"] <= 0.35
    assert result["round_trip"]["f1"] == 1.0
    assert code == 0
    for data in (seed, compact):
        padding = data["padding"]
        assert padding["random"]["real_tokens"] == padding["packed"]["real_tokens"] == data["tokens"]["total_tokens"]
        assert padding["random"]["rows"] == 32
        assert data["cutoff_len"] % 8 == 0 and data["cutoff_len"] > data["tokens"]["max_tokens"]
