"""The prompt nerft's engines send is, token for token, the prompt LLaMA-Factory trained on.

LLaMA-Factory's own pipeline encodes a training example made by `nerft prepare`: the alpaca
converter (with the columns `nerft prepare` registers), the `qwen` template, and the supervised
processor. Everything before the first trained label is what the model saw before its answer;
`ChatTemplate.encode` must produce exactly that, with the tiny tokenizer and the real Qwen2 one.
"""

import pytest

from nerft.data.load import load_records
from nerft.data.prepare import ALPACA_COLUMNS
from nerft.inference.chat import ChatTemplate, render_qwen
from nerft.inference.engines import ChatRequest
from nerft.prompts import get_format

pytestmark = pytest.mark.slow  # imports llamafactory (10 to 20 s)


class TrainingEncoder:
    """LLaMA-Factory's data pipeline for the examples `nerft prepare` writes."""

    def __init__(self, tokenizer, template="qwen"):
        from llamafactory.data.converter import AlpacaDatasetConverter
        from llamafactory.data.parser import DatasetAttr
        from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments

        data_args = DataArguments(template=template, cutoff_len=4096)
        attr = DatasetAttr("file", "cluener_train")
        for key, column in ALPACA_COLUMNS.items():
            setattr(attr, key, column)
        self.converter = AlpacaDatasetConverter(attr, data_args)
        template = get_template_and_fix_tokenizer(tokenizer, data_args)
        self.processor = SupervisedDatasetProcessor(
            template=template, tokenizer=tokenizer, processor=None, data_args=data_args
        )

    def prompt_ids(self, example: dict) -> list[int]:
        """The tokens before the first trained label: what the model saw before its answer."""
        from llamafactory.extras.constants import IGNORE_INDEX

        converted = self.converter(example)
        input_ids, labels = self.processor._encode_data_example(
            prompt=converted["_prompt"],
            response=converted["_response"],
            system=converted["_system"],
            tools=converted["_tools"],
            images=[],
            videos=[],
            audios=[],
        )
        answer_start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        return input_ids[:answer_start]


@pytest.fixture(scope="module")
def tokenizers(tiny_model, request):
    """The tiny tokenizer, and the real Qwen2 one when ../shared has it, each loaded once."""
    from transformers import AutoTokenizer

    folders = [tiny_model]
    try:
        folders.append(request.getfixturevalue("qwen2_tokenizer_dir"))
    except pytest.skip.Exception:
        pass
    return {str(folder): AutoTokenizer.from_pretrained(folder) for folder in folders}


# qwen: the Qwen2.5 presets (qwen7b, qwen2.5-1.5b); qwen3_nothink: conf/qwen3-8b.yaml
@pytest.mark.parametrize("template", ["qwen", "qwen3_nothink"])
@pytest.mark.parametrize("prompt", ["compact", "seed"])
def test_engine_prompt_equals_llamafactory_training_prompt(prompt, template, tokenizers, sample_dir):
    fmt = get_format(prompt)
    records = load_records(sample_dir / "train.jsonl")[:5]
    for folder, tokenizer in tokenizers.items():
        ours, theirs = ChatTemplate.load(template, tokenizer), TrainingEncoder(tokenizer, template)
        assert ours._llamafactory_template is None  # written out by nerft, not taken from LLaMA-Factory
        for record in records:
            expected = theirs.prompt_ids(fmt.example(record))
            chat = ChatRequest.for_text(fmt, record.text)
            assert ours.encode(chat.system, chat.user) == expected, (folder, record.text)
            assert tokenizer.decode(expected) == render_qwen(fmt.system, fmt.user_message(record.text), template)


@pytest.mark.parametrize(
    ("template", "system"),
    [
        (
            "qwen",
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n",
        ),
        ("qwen3_nothink", ""),
    ],
)
def test_an_empty_system_prompt_takes_the_template_default_as_in_llamafactory(template, system, tokenizers, sample_dir):
    record = load_records(sample_dir / "train.jsonl")[0]
    example = {**get_format("compact").example(record), "system": ""}
    for tokenizer in tokenizers.values():
        expected = TrainingEncoder(tokenizer, template).prompt_ids(example)
        assert ChatTemplate.load(template, tokenizer).encode("", record.text) == expected
        assert (
            tokenizer.decode(expected) == f"{system}<|im_start|>user\n{record.text}<|im_end|>\n<|im_start|>assistant\n"
        )


@pytest.mark.parametrize("template", ["qwen", "qwen3_nothink"])
def test_stop_tokens_equal_llamafactory_s(tiny_model, template):
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    theirs = get_template_and_fix_tokenizer(AutoTokenizer.from_pretrained(tiny_model), DataArguments(template=template))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert sorted(ChatTemplate.load(template, tokenizer).stop_token_ids) == sorted(theirs.get_stop_token_ids(tokenizer))
    assert ChatTemplate.load(template, tokenizer).stop_words == tuple(theirs.stop_words)


def test_other_templates_are_encoded_by_llamafactory(tiny_model):
    from transformers import AutoTokenizer

    template = ChatTemplate.load("chatml", AutoTokenizer.from_pretrained(tiny_model))
    ids = template.encode("NER", "京东与沃尔玛合作。")
    assert (
        template.tokenizer.decode(ids)
        == "<|im_start|>system\nNER<|im_end|>\n<|im_start|>user\n京东与沃尔玛合作。<|im_end|>\n<|im_start|>assistant\n"
    )
