"""The hf engine on the tiny run: batching with left padding changes nothing, bounds and stops per row."""

import json
import shutil

import pytest

from nerft.data.load import load_records
from nerft.inference.engines import ChatRequest, Generation
from nerft.inference.source import ModelSource, resolve_model
from nerft.runfolder import load_run, write_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tiny_run):
    from nerft.inference.engines.hf import HFEngine

    engine = HFEngine(resolve_model(load_run(tiny_run)), batch_size=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def requests(tiny_run, sample_dir):
    fmt = load_run(tiny_run).prompt_format()
    return [ChatRequest.for_text(fmt, record.text) for record in load_records(sample_dir / "dev.jsonl")]


def generate(engine, requests, batch_size):
    engine.batch_size = batch_size
    return list(engine.generate(requests))


def test_batches_with_left_padding_answer_exactly_as_one_at_a_time(engine, requests):
    # The dev sentences have 13 to 27 characters: a batch pads the short ones on the left.
    assert len({len(r.text) for r in requests[:4]}) > 1
    alone = generate(engine, requests, 1)
    batched = generate(engine, requests, 4)
    assert batched == alone
    # The comparison means something only if the tiny model's answers depend on the sentence.
    assert len({g.text for g in alone}) == len(alone)


def test_each_row_is_cut_at_its_own_bound(engine, requests):
    short = ChatRequest(requests[0].text, requests[0].system, requests[0].user, max_new_tokens=3)
    longer = ChatRequest(requests[0].text, requests[0].system, requests[0].user, max_new_tokens=40)
    together = generate(engine, [short, requests[1]], 2)
    assert together == [generate(engine, [short], 1)[0], generate(engine, [requests[1]], 1)[0]]
    assert together[0].finish_reason == "length"
    # Greedy: 3 tokens are the start of 40 tokens, and fewer characters.
    assert generate(engine, [longer], 1)[0].text.startswith(together[0].text.rstrip("\ufffd"))
    assert len(together[0].text) < len(generate(engine, [longer], 1)[0].text)


def test_the_prompt_sent_is_the_training_prompt(engine, requests):
    ids = engine.encode(requests[0])
    assert (
        engine.tokenizer.decode(ids)
        == f"<|im_start|>system\nNER<|im_end|>\n<|im_start|>user\n{requests[0].text}<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def stopping_model(tmp_path_factory, tiny_model):
    """The tiny model changed so that `<|im_end|>` is always the most likely next token.

    Dimension 0 of every embedding is large and positive (so the final hidden state's dimension 0
    is positive), the final norm keeps only that dimension, and `<|im_end|>`'s (tied) embedding
    has twice the others' value there: its logit is twice any other.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("models") / "tiny-stops"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    im_end = AutoTokenizer.from_pretrained(tiny_model).convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[:, 0] = 10.0
        embeddings[im_end, 0] = 20.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


def test_generation_stops_at_the_template_end_token(stopping_model, requests):
    from nerft.inference.engines.hf import HFEngine

    engine = HFEngine(ModelSource(str(stopping_model), None, "qwen"), batch_size=3)
    assert engine.stop_ids == [engine.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert list(engine.generate(requests[:3])) == [Generation("", "stop")] * 3


def test_a_merged_model_answers_as_base_plus_adapter(engine, requests, tiny_run, tmp_path):
    from nerft.inference.engines.hf import HFEngine

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    merged = tmp_path / "merged"
    engine.model.save_pretrained(merged)  # the engine holds the adapter merged into the base
    engine.tokenizer.save_pretrained(merged)
    info = load_run(run_dir)
    info.adapter_dir, info.merged_model = run_dir, merged
    write_run(info)
    assert json.loads((run_dir / "run.json").read_text())["merged_model"] == str(merged)
    source = resolve_model(load_run(run_dir))
    assert (source.model, source.adapter) == (str(merged), None)
    merged_engine = HFEngine(source, batch_size=4)
    assert list(merged_engine.generate(requests[:4])) == generate(engine, requests[:4], 4)
