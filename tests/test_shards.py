"""`nerft predict --shard-rows N --out FOLDER`: predictions as a folder of shards of N rows each, in
input order, resumable like one file, and scored by `nerft eval --predictions FOLDER` like it.
Answers come from an OpenAI-compatible server in a thread (`test_openai_engine.FakeServer`), so
what is tested is the writing, not a model; test_ray.py shards on a Ray cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import DataError, ServerError
from nerft.inference.engines.openai import OpenAIEngine
from nerft.inference.predict import predict_records

sys.path.insert(0, str(Path(__file__).parent))
from test_openai_engine import COMPACT, TEXTS, FakeServer, answer_for, records  # noqa: E402

GOLD = Path(__file__).resolve().parent.parent / "data" / "sample" / "dev.jsonl"


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def texts_of(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in lines_of(path)]


def test_shards_hold_the_rows_of_one_file_in_order(tmp_path):
    with FakeServer() as server:
        engine = OpenAIEngine(server.url, model="tiny-lora", concurrency=3)
        single = predict_records(records(), engine, COMPACT, out=tmp_path / "one.jsonl")
        sharded = predict_records(records(), engine, COMPACT, out=tmp_path / "shards", shard_rows=4)
    assert (single.records, sharded.records) == (6, 6)
    out = tmp_path / "shards"
    assert sorted(item.name for item in out.iterdir()) == ["part-00000.jsonl", "part-00001.jsonl"]
    assert len(lines_of(out / "part-00000.jsonl")) == 4 and len(lines_of(out / "part-00001.jsonl")) == 2
    assert lines_of(out / "part-00000.jsonl") + lines_of(out / "part-00001.jsonl") == lines_of(tmp_path / "one.jsonl")
    assert not (tmp_path / "shards.partial").exists() and not (tmp_path / "shards.partial.json").exists()


def test_a_cut_sharded_run_resumes_in_its_last_shard(tmp_path):
    out = tmp_path / "shards"
    partial = tmp_path / "shards.partial"
    # Answers 5 requests, then fails for good: shards of 2, 2 and 1 rows are kept.
    with FakeServer(behaviour=lambda n, body: (200, None) if n < 5 else (502, {"detail": "bad gateway"})) as server:
        engine = OpenAIEngine(server.url, model="tiny-lora", concurrency=1, retries=0, backoff=0.01)
        with pytest.raises(ServerError) as info:
            predict_records(records(), engine, COMPACT, out=out, shard_rows=2)
    assert f"5 of 6 predictions kept in {partial}" in str(info.value)
    assert not out.exists()
    assert [len(lines_of(partial / f"part-0000{i}.jsonl")) for i in range(3)] == [2, 2, 1]
    with open(partial / "part-00002.jsonl", "ab") as handle:
        handle.write(b'{"text": "cut mid-wr')  # killed inside a row: that row is predicted again

    with FakeServer() as healthy:
        engine = OpenAIEngine(healthy.url, model="tiny-lora", concurrency=2)
        counts = predict_records(records(), engine, COMPACT, out=out, shard_rows=2)
    assert healthy.texts() == TEXTS[5:]  # only the sixth sentence is asked
    assert (counts.resumed, counts.predicted) == (5, 1)
    assert [texts_of(out / f"part-0000{i}.jsonl") for i in range(3)] == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:6]]
    rows = [json.loads(line) for i in range(3) for line in lines_of(out / f"part-0000{i}.jsonl")]
    assert [row["predict"] for row in rows] == [answer_for(text) for text in TEXTS]
    assert not partial.exists()


def test_a_resumed_run_must_cut_its_shards_alike_and_find_its_sentences(tmp_path):
    out = tmp_path / "shards"
    with FakeServer(behaviour=lambda n, body: (200, None) if n < 3 else (502, {"detail": "down"})) as server:
        engine = OpenAIEngine(server.url, model="tiny-lora", concurrency=1, retries=0, backoff=0.01)
        with pytest.raises(ServerError):
            predict_records(records(), engine, COMPACT, out=out, shard_rows=2)
        with pytest.raises(DataError) as info:
            predict_records(records(), engine, COMPACT, out=out, shard_rows=3)
        assert info.value.message == f"{out}.partial was started with other settings: shard_rows 2, not 3"
        # Kept rows of other sentences: the shard and line are named, with the record's number.
        other = [*TEXTS[:2], "另一句话。", *TEXTS[3:]]
        with pytest.raises(DataError) as info:
            predict_records(records(other), engine, COMPACT, out=out, shard_rows=2)
        assert info.value.message == (
            f"{out}.partial/part-00001.jsonl:1: predicts another sentence than record 3 of the input"
        )


def gold_answers(n, body):
    """A server that answers the gold sample's first entity of each sentence."""
    text = body["messages"][1]["content"]
    record = next(json.loads(line) for line in lines_of(GOLD) if json.loads(line)["text"] == text)
    first = next(iter(record["label"].items()), None)  # a sentence without entities: "无"
    message = {"role": "assistant", "content": f"{first[0]}:{next(iter(first[1]))}" if first else "无"}
    return 200, {
        "id": f"c{n}",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


def test_predict_cli_writes_shards_that_eval_scores_like_one_file(tmp_path):
    out = tmp_path / "shards"
    one = tmp_path / "one.jsonl"
    with FakeServer(behaviour=gold_answers) as server:
        result = invoke("predict", "--endpoint", server.url, "--data", GOLD, "--out", out, "--shard-rows", 4)
        assert result.exit_code == 0, result.output
        assert result.stderr.startswith(f"wrote 9 predictions to {out}")
        assert result.stderr.rstrip().endswith("(3 shards of at most 4 rows)")
        assert [len(lines_of(out / f"part-0000{i}.jsonl")) for i in range(3)] == [4, 4, 1]
        # Again over the same folder: the earlier run's shards are replaced, not added to.
        result = invoke("predict", "--endpoint", server.url, "--data", GOLD, "--out", out, "--shard-rows", 5)
        assert result.exit_code == 0, result.output
        assert sorted(item.name for item in out.iterdir()) == ["part-00000.jsonl", "part-00001.jsonl"]
        result = invoke("predict", "--endpoint", server.url, "--data", GOLD, "--out", one)
        assert result.exit_code == 0, result.output
    assert lines_of(out / "part-00000.jsonl") + lines_of(out / "part-00001.jsonl") == lines_of(one)

    scores = []
    for predictions in (one, out):
        result = invoke("eval", "--gold", GOLD, "--predictions", predictions, "--json")
        assert result.exit_code == 0, result.output
        scores.append(json.loads(result.stdout))
    assert scores[0] == scores[1] and scores[0]["micro"]["f1"] > 0  # the same report, of answers that find entities

    # A shard whose row is another sentence than the gold's is named with its own line.
    shard = out / "part-00001.jsonl"
    rows = lines_of(shard)
    rows[1] = json.dumps({**json.loads(rows[1]), "text": "别的句子。"}, ensure_ascii=False)
    shard.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = invoke("eval", "--gold", GOLD, "--predictions", out)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"nerft: error: {shard}:2: predicts '别的句子。', not the gold sentence")


def test_predict_cli_refuses_an_out_that_cannot_hold_shards_before_any_work(tmp_path):
    with FakeServer() as server:

        def refusal(*args) -> str:
            result = invoke("predict", "--endpoint", server.url, "--data", GOLD, *args)
            assert result.exit_code == 1, result.output
            return result.stderr.splitlines()[0]

        folder = tmp_path / "mine"
        folder.mkdir()
        (folder / "notes.txt").write_text("keep me", encoding="utf-8")
        (folder / "part-00000.jsonl").write_text("", encoding="utf-8")
        assert refusal("--out", folder, "--shard-rows", 4) == (
            f"nerft: error: --out {folder}: holds notes.txt, not only shards: nerft would delete it"
            " (give --out a new folder, or one of an earlier run's shards)"
        )
        assert (folder / "notes.txt").read_text(encoding="utf-8") == "keep me"
        a_file = tmp_path / "a.jsonl"
        a_file.write_text("", encoding="utf-8")
        assert refusal("--out", a_file, "--shard-rows", 4) == (
            f"nerft: error: --out {a_file}: is a file, not a folder of shards"
            " (give --out a new folder, or one of an earlier run's shards)"
        )
        assert refusal("--shard-rows", 4) == (
            "nerft: error: --shard-rows writes a folder of shards: give it with --out FOLDER"
        )
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        inside = corpus / "part-00000.jsonl"
        inside.write_bytes(GOLD.read_bytes())
        result = invoke("predict", "--endpoint", server.url, "--data", inside, "--out", corpus, "--shard-rows", 4)
        assert result.exit_code == 1
        assert result.stderr.splitlines()[0] == (
            f"nerft: error: --out {corpus} holds the input --data {inside}: nerft would delete it (give --out another path)"
        )
        assert server.requests == []  # refused before a sentence was asked
    assert inside.read_bytes() == GOLD.read_bytes()
