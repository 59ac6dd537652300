"""Prediction at any size: input read as the engine asks, rows written as they come, hf batches by
length with answers in input order, and prompt lookup that changes speed, not answers."""

from __future__ import annotations

import json

import pytest
from benchlib.streaming import CopyEngine

from nerft.data.load import stream_records
from nerft.data.records import CluenerRecord
from nerft.errors import ConfigError, DataError
from nerft.inference.engines import ChatRequest
from nerft.inference.options import EngineOptions
from nerft.inference.predict import open_engine, predict_records
from nerft.prompts import get_format
from nerft.runfolder import load_run

COMPACT = get_format("compact")


def test_each_row_is_written_before_the_next_sentence_is_read(tmp_path):
    out = tmp_path / "pred.jsonl"
    partial = tmp_path / "pred.jsonl.partial"
    written_when_read = []

    def records():
        for i in range(100):
            written_when_read.append(sum(1 for _ in open(partial, "rb")) if partial.exists() else 0)
            yield CluenerRecord(text=f"张三在北京{i}", labelled=False)

    counts = predict_records(records(), CopyEngine(), COMPACT, out=out)
    assert written_when_read == list(range(100))  # sentence i is read once rows 0..i-1 are on disk
    assert counts.records == 100 and counts.entities == 100
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == [f"张三在北京{i}" for i in range(100)]
    assert rows[0]["entities"] == [
        {"label": "name", "text": "张三", "start": 0, "end": 2, "ambiguous": False, "confidence": None}
    ]


def test_a_stream_resumes_from_its_kept_rows(tmp_path):
    out = tmp_path / "pred.jsonl"
    texts = [f"李四{i}" for i in range(10)]
    predict_records((CluenerRecord(text=t, labelled=False) for t in texts[:4]), CopyEngine(), COMPACT, out=out)
    out.rename(f"{out}.partial")  # as if the run had been cut after 4 rows
    asked = []

    class Counting(CopyEngine):
        def generate(self, requests):
            for request in requests:
                asked.append(request.text)
                yield from super().generate([request])

    counts = predict_records((CluenerRecord(text=t, labelled=False) for t in texts), Counting(), COMPACT, out=out)
    assert (counts.resumed, counts.records) == (4, 10)
    assert asked == texts[4:]
    assert [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()] == texts


def test_stream_records_checks_the_whole_file_first_then_streams_it(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(json.dumps({"text": f"王五{i}"}, ensure_ascii=False) + "\n" for i in range(5)), encoding="utf-8"
    )
    stream = stream_records(good)
    assert len(stream) == 5
    assert [record.text for record in stream] == [f"王五{i}" for i in range(5)]
    assert [record.text for record in stream] == [f"王五{i}" for i in range(5)]  # read again, not held
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text(encoding="utf-8") + '{"text": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:6"):
        stream_records(bad)


@pytest.mark.usefixtures("one_thread")
def test_hf_batches_by_length_and_answers_in_input_order(tiny_run):
    from nerft.inference.engines.hf import BUCKET_BATCHES

    engine = open_engine(EngineOptions(engine="hf", batch_size=2), load_run(tiny_run))
    fmt = load_run(tiny_run).prompt_format()
    texts = ["北京" * (1 + (i * 7) % 11) for i in range(2 * BUCKET_BATCHES + 3)]  # lengths out of order
    requests = [ChatRequest.for_text(fmt, text) for text in texts]
    pulled = []

    def lazily():
        for request in requests:
            pulled.append(request)
            yield request

    widths = []
    generate = engine.model.generate

    def spy(*args, **kwargs):
        mask = kwargs["attention_mask"]
        widths.append((mask.shape[1], int(mask.sum(dim=1).min())))
        return generate(*args, **kwargs)

    engine.model.generate = spy
    try:
        answers = engine.generate(lazily())
        first = next(answers)
        assert len(pulled) == 2 * BUCKET_BATCHES  # one window read ahead, not the whole input
        batched = [first, *answers]
        engine.batch_size = 1
        alone = list(engine.generate(requests))
    finally:
        engine.close()
    assert [g.text for g in batched] == [g.text for g in alone]
    # In each window's batches the two rows differ by at most one repetition of 北京 (2 tokens or so);
    # unsorted, neighbours differ by up to 10.
    assert all(width - shortest <= 4 for width, shortest in widths[:BUCKET_BATCHES])


@pytest.mark.usefixtures("one_thread")
def test_prompt_lookup_gives_the_learned_runs_answers_and_is_used_at_batch_size_one(learned_run, sample_dir):
    from benchlib.inference import counted_forward_passes

    from nerft.data.load import load_records

    run = load_run(learned_run)
    fmt = run.prompt_format()
    requests = [ChatRequest.for_text(fmt, record.text) for record in load_records(sample_dir / "train.jsonl")[:8]]
    engine = open_engine(EngineOptions(engine="hf", batch_size=1), run)
    lookups = []
    generate = engine.model.generate

    def spy(*args, **kwargs):
        lookups.append(kwargs["generation_config"].prompt_lookup_num_tokens)
        return generate(*args, **kwargs)

    engine.model.generate = spy
    try:
        assert engine.prompt_lookup
        with counted_forward_passes(engine) as looked_up:
            with_lookup = [g.text for g in engine.generate(requests)]
        engine.speculation = False
        with counted_forward_passes(engine) as plain:
            without = [g.text for g in engine.generate(requests)]
        engine.speculation, engine.batch_size = None, 4
        assert not engine.prompt_lookup  # transformers cannot look up in batches
        batched = [g.text for g in engine.generate(requests)]
    finally:
        engine.close()
    assert lookups == [4] * 8 + [None] * 8 + [None] * 2
    assert with_lookup == without == batched
    # drafts copied from the sentence are accepted: fewer forward passes for the same answers
    assert looked_up[0] < 0.85 * plain[0]
    assert with_lookup[0] == "name:王立明\naddress:杭州西湖区\ncompany:阿里巴巴"  # the learned answer


def test_speculation_in_hf_batches_is_refused(tiny_run):
    with pytest.raises(ConfigError, match="needs --batch-size 1"):
        open_engine(EngineOptions(engine="hf", speculation=True), load_run(tiny_run))


def test_vllm_runs_ngram_speculation_at_batch_size_one_unless_told():
    from nerft.inference.engines.vllm import DEFAULT_BATCH_SIZE, speculates

    assert speculates(None, 1) and not speculates(None, DEFAULT_BATCH_SIZE)
    assert speculates(True, DEFAULT_BATCH_SIZE) and not speculates(False, 1)
