"""Predicting over records: prediction rows, the resumable predictions file, stdin input, `nerft predict` errors."""

import itertools
import json
import math

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.records import CluenerRecord
from nerft.errors import ConfigError, DataError, ServerError
from nerft.inference.engines import ChatRequest, Generation, whole_characters
from nerft.inference.options import EngineOptions
from nerft.inference.predict import open_engine, predict_records, records_from_lines
from nerft.inference.predictions import prediction_row
from nerft.prompts import get_format

COMPACT = get_format("compact")
TEXTS = ["孙丽在南京开了书店。", "京东与沃尔玛合作。", "今天天气很好。", "湖人队的詹姆斯。", "他读了《围城》。"]


class ScriptedEngine:
    """Answers `answers[text]`; raises ServerError on the request after `fail_after` answers."""

    name = "scripted"

    def __init__(self, answers, *, fail_after=None, model="m1"):
        self.answers = answers
        self.fail_after = fail_after
        self.model = model
        self.seen: list[ChatRequest] = []

    def describe(self):
        return {"engine": self.name, "model": self.model}

    def generate(self, requests):
        for request in requests:
            if self.fail_after is not None and len(self.seen) == self.fail_after:
                raise ServerError("http://127.0.0.1:9/v1/chat/completions: no answer after 5 attempts (ConnectError)")
            self.seen.append(request)
            yield Generation(self.answers.get(request.text, "无"), "stop")

    def close(self):
        pass


def records(texts=TEXTS):
    return [CluenerRecord(text=text, labelled=False) for text in texts]


ANSWERS = {TEXTS[0]: "name:孙丽\naddress:南京\naddress:北京", TEXTS[1]: "company:京东\ncompany:京东\ncompany:沃尔玛"}


# ---- one row ---------------------------------------------------------------------------------


def test_row_keeps_substrings_drops_the_rest_and_counts_each_pair_once():
    record = CluenerRecord(text="孙丽在南京开了书店。", labelled=False, id=7)
    row = prediction_row(record, Generation("name:孙丽\naddress:南京\naddress:北京\nname:孙丽", "stop"))
    assert row == {
        "id": 7,
        "text": "孙丽在南京开了书店。",
        "predict": "name:孙丽\naddress:南京\naddress:北京\nname:孙丽",
        "entities": [
            {"label": "name", "text": "孙丽", "start": 0, "end": 2, "ambiguous": False, "confidence": None},
            {"label": "address", "text": "南京", "start": 3, "end": 5, "ambiguous": False, "confidence": None},
        ],
        "dropped": [{"label": "address", "text": "北京"}],
        "unparseable": False,
        "finish_reason": "stop",
        "confidence": None,  # the engine gave no log-probabilities
    }


def test_an_answer_cut_inside_a_character_ends_at_its_last_whole_character():
    # "央" is e5 a4 ae: the token limit came after its first two bytes, which decode to U+FFFD
    tokens = ((b"name:", -0.1), ("央视".encode()[:3], -0.2), (b"\xe5", -0.3), (b"\xa4", -0.4))
    cut = Generation("name:央\ufffd", "length", tokens)
    row = prediction_row(CluenerRecord(text="央视新闻", labelled=False), cut, fmt=get_format("compact", ["name"]))
    assert row["predict"] == "name:央"
    assert [(e["text"], e["start"], e["end"]) for e in row["entities"]] == [("央", 0, 1)]
    assert row["dropped"] == []
    assert row["confidence"] == round(math.exp(-0.3), 6)  # the partial character's tokens are gone


def test_only_the_unfinished_character_of_a_cut_answer_is_trimmed():
    eye = "👁".encode()  # four bytes
    assert whole_characters(Generation("name:👁", "length", ((b"name:", 0.0), (eye, -1.0)))).text == "name:👁"
    assert whole_characters(Generation("a\ufffd", "stop")).text == "a\ufffd"  # a stop answer is what it is
    straddling = whole_characters(Generation("央\ufffd", "length", (("央".encode() + b"\xe8", -0.5),)))
    assert straddling == Generation("央", "length")
    assert straddling.tokens == (("央".encode(), -0.5),)  # the token cut in two keeps its log-probability
    # a server's answer spells the part as U+FFFD itself (ef bf bd): the same end is dropped
    served = whole_characters(Generation("央\ufffd", "length", (("央\ufffd".encode(), -0.5),)))
    assert (served.text, served.tokens) == ("央", (("央".encode(), -0.5),))


def test_keep_unsupported_keeps_entities_not_in_the_sentence():
    record = CluenerRecord(text="孙丽在南京开了书店。", labelled=False)
    row = prediction_row(record, Generation('[{"label": "address", "text": "北京"}]', "stop"), keep_unsupported=True)
    assert row["entities"] == [
        {"label": "address", "text": "北京", "start": None, "end": None, "ambiguous": False, "confidence": None}
    ]
    assert row["dropped"] == []
    assert "id" not in row


def offsets(text, answer):
    row = prediction_row(CluenerRecord(text=text, labelled=False), Generation(answer, "stop"))
    return [(e["text"], e["start"], e["end"], e["ambiguous"]) for e in row["entities"]]


def test_offsets_are_end_exclusive_and_the_longer_entity_claims_its_characters_first():
    # answer order kept; 北京大学 (longer) is placed before 北京, which then takes its free occurrence
    assert offsets("北京大学在北京。", "address:北京\norganization:北京大学") == [
        ("北京", 5, 7, True),
        ("北京大学", 0, 4, False),
    ]


def test_a_repeated_string_is_flagged_ambiguous_and_takes_its_first_free_occurrence():
    # 张三 twice: the first occurrence, flagged; 李四 once: not flagged
    assert offsets("张三和李四，张三。", "name:李四\nname:张三") == [("李四", 3, 5, False), ("张三", 0, 2, True)]


def test_one_string_under_two_labels_is_placed_at_the_next_free_occurrence_then_nested():
    # the second label of 苹果 takes the second occurrence; a third label nests in the first
    assert offsets("苹果和苹果", "company:苹果\nproduct:苹果\nbrand:苹果") == [
        ("苹果", 0, 2, True),
        ("苹果", 3, 5, True),
        ("苹果", 0, 2, True),
    ]


def test_a_nested_entity_with_no_free_occurrence_overlaps_the_longer_one():
    assert offsets("北京大学", "organization:北京大学\naddress:北京") == [
        ("北京大学", 0, 4, False),
        ("北京", 0, 2, False),
    ]


def test_an_unreadable_answer_is_flagged_with_no_entity():
    row = prediction_row(CluenerRecord(text="今天天气很好。", labelled=False), Generation("从从从从", "length"))
    assert (row["entities"], row["dropped"], row["unparseable"], row["finish_reason"]) == ([], [], True, "length")


def test_none_answer_is_no_entity_and_readable():
    row = prediction_row(CluenerRecord(text="今天天气很好。", labelled=False), Generation("无", "stop"))
    assert (row["entities"], row["unparseable"]) == ([], False)


def test_request_carries_the_run_prompt_and_the_format_bound():
    request = ChatRequest.for_text(get_format("seed"), "京东与沃尔玛合作。")
    assert request.system == "You are a helpful assistant."
    assert request.user == get_format("seed").instruction + "\n京东与沃尔玛合作。"
    assert request.max_new_tokens == 16 + 9 * 2 * 2
    assert ChatRequest.for_text(COMPACT, "京东与沃尔玛合作。").messages == [
        {"role": "system", "content": "NER"},
        {"role": "user", "content": "京东与沃尔玛合作。"},
    ]


# ---- resumable file --------------------------------------------------------------------------


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_are_written_in_input_order_and_counted(tmp_path):
    out = tmp_path / "pred.jsonl"
    counts = predict_records(records(), ScriptedEngine(ANSWERS), COMPACT, out=out)
    rows = read_rows(out)
    assert [row["text"] for row in rows] == TEXTS
    assert [(e["label"], e["text"]) for e in rows[1]["entities"]] == [("company", "京东"), ("company", "沃尔玛")]
    assert (counts.records, counts.predicted, counts.resumed, counts.entities, counts.dropped) == (5, 5, 0, 4, 1)
    assert not (tmp_path / "pred.jsonl.partial").exists() and not (tmp_path / "pred.jsonl.partial.json").exists()


def test_a_failed_run_keeps_its_rows_and_the_next_run_predicts_only_the_rest(tmp_path):
    out = tmp_path / "pred.jsonl"
    with pytest.raises(ServerError) as info:
        predict_records(records(), ScriptedEngine(ANSWERS, fail_after=2), COMPACT, out=out)
    message = str(info.value)
    assert "http://127.0.0.1:9/v1/chat/completions: no answer after 5 attempts" in message
    assert f"2 of 5 predictions kept in {out}.partial" in message
    assert "run the same command again to predict the other 3" in message
    assert not out.exists()
    assert [row["text"] for row in read_rows(tmp_path / "pred.jsonl.partial")] == TEXTS[:2]

    again = ScriptedEngine(ANSWERS)
    counts = predict_records(records(), again, COMPACT, out=out)
    assert [request.text for request in again.seen] == TEXTS[2:]
    assert (counts.resumed, counts.predicted, counts.entities) == (2, 3, 4)
    uninterrupted = tmp_path / "whole.jsonl"
    predict_records(records(), ScriptedEngine(ANSWERS), COMPACT, out=uninterrupted)
    assert out.read_text(encoding="utf-8") == uninterrupted.read_text(encoding="utf-8")
    assert not (tmp_path / "pred.jsonl.partial").exists()


def test_a_row_cut_mid_line_is_predicted_again(tmp_path):
    out = tmp_path / "pred.jsonl"
    with pytest.raises(ServerError):
        predict_records(records(), ScriptedEngine(ANSWERS, fail_after=2), COMPACT, out=out)
    partial = tmp_path / "pred.jsonl.partial"
    partial.write_text(partial.read_text(encoding="utf-8") + '{"text": "今天天', encoding="utf-8")
    again = ScriptedEngine(ANSWERS)
    predict_records(records(), again, COMPACT, out=out)
    assert [request.text for request in again.seen] == TEXTS[2:]
    assert [row["text"] for row in read_rows(out)] == TEXTS


def test_a_partial_file_of_other_sentences_is_refused(tmp_path):
    out = tmp_path / "pred.jsonl"
    with pytest.raises(ServerError):
        predict_records(records(), ScriptedEngine(ANSWERS, fail_after=2), COMPACT, out=out)
    with pytest.raises(DataError) as info:
        predict_records(records(TEXTS[1:]), ScriptedEngine(ANSWERS), COMPACT, out=out)
    assert str(info.value) == (
        f"{out}.partial:1: predicts another sentence than record 1 of the input (--restart deletes them and predicts everything again)"
    )


def test_a_partial_file_of_another_model_is_refused(tmp_path):
    out = tmp_path / "pred.jsonl"
    with pytest.raises(ServerError):
        predict_records(records(), ScriptedEngine(ANSWERS, fail_after=2), COMPACT, out=out)
    with pytest.raises(DataError) as info:
        predict_records(records(), ScriptedEngine(ANSWERS, model="m2"), COMPACT, out=out)
    assert "was started with other settings: model m1, not m2" in str(info.value)


def test_a_partial_file_of_another_prompt_format_is_refused(tmp_path):
    # killed with the compact format, rerun with seed: the kept rows would mix two formats' answers
    out = tmp_path / "pred.jsonl"
    with pytest.raises(ServerError):
        predict_records(records(), ScriptedEngine(ANSWERS, fail_after=2), COMPACT, out=out)
    with pytest.raises(DataError) as info:
        predict_records(records(), ScriptedEngine(ANSWERS), get_format("seed"), out=out)
    assert "was started with other settings: prompt compact, not seed" in str(info.value)


def test_without_out_rows_go_to_the_sink_only(tmp_path):
    rows = []
    predict_records(records(TEXTS[:2]), ScriptedEngine(ANSWERS), COMPACT, sink=rows.append)
    assert [row["predict"] for row in rows] == [ANSWERS[TEXTS[0]], ANSWERS[TEXTS[1]]]
    assert list(tmp_path.iterdir()) == []


# ---- input -----------------------------------------------------------------------------------


def test_stdin_takes_sentences_or_json_records_and_skips_blank_lines():
    lines = ["孙丽在南京开了书店。\n", "\n", '{"id": 3, "text": "京东与沃尔玛合作。"}\n', "  今天天气很好。  \n"]
    got = list(records_from_lines(lines))
    assert [(r.text, r.id, r.line) for r in got] == [
        ("孙丽在南京开了书店。", None, 1),
        ("京东与沃尔玛合作。", 3, 3),
        ("今天天气很好。", None, 4),
    ]


def test_stdin_broken_json_names_the_line():
    with pytest.raises(DataError) as info:
        list(records_from_lines(["孙丽\n", '{"text": "京东\n']))
    assert str(info.value).startswith("<stdin>:2: broken JSON")


def test_stdin_without_sentences_is_an_error_before_anything_is_predicted():
    with pytest.raises(DataError, match="no sentence to predict"):
        records_from_lines(["\n", "  \n"])  # raised by the call itself, not on iteration


class CountedLines:
    """Lines handed out one at a time, counting how many were read (a pipe that never ends)."""

    def __init__(self, lines):
        self.lines, self.read = iter(lines), 0

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self.lines)
        self.read += 1
        return line


def test_stdin_streams_each_row_is_answered_before_the_next_line_is_read():
    source = CountedLines(itertools.cycle([f"{TEXTS[0]}\n", "\n", f"{TEXTS[1]}\n"]))
    stream = records_from_lines(source)
    assert source.read == 1  # only the first record was read to check there is one
    read_at_row = []
    stop = 5

    def sink(row):
        read_at_row.append(source.read)
        if len(read_at_row) == stop:
            raise KeyboardInterrupt  # the endless pipe is cut

    with pytest.raises(KeyboardInterrupt):
        predict_records(stream, ScriptedEngine(ANSWERS), COMPACT, sink=sink)
    # rows 1..5 are lines 1, 3, 4, 6, 7 of the cycle; each row comes after reading its own line
    assert read_at_row == [1, 3, 4, 6, 7]


def test_stdin_bad_line_later_in_the_stream_stops_after_the_rows_before_it(tmp_path):
    lines = [f"{TEXTS[0]}\n", f"{TEXTS[1]}\n", '{"text": 5}\n', f"{TEXTS[0]}\n"]
    out = tmp_path / "rows.jsonl"
    with pytest.raises(DataError, match="^<stdin>:3: "):
        predict_records(records_from_lines(lines), ScriptedEngine(ANSWERS), COMPACT, out=out)
    assert not out.exists()  # nothing renamed into place; the two rows wait in the resumable partial
    kept = [json.loads(line) for line in (tmp_path / "rows.jsonl.partial").read_text().splitlines()]
    assert [row["text"] for row in kept] == TEXTS[:2]


# ---- engine choice and command errors ----------------------------------------------------------


def test_openai_needs_an_endpoint_and_hf_needs_a_run():
    with pytest.raises(ConfigError, match="--engine openai needs --endpoint"):
        open_engine(EngineOptions(engine="openai"))
    with pytest.raises(ConfigError, match="--engine hf needs --run"):
        open_engine(EngineOptions(engine="hf"))
    with pytest.raises(ConfigError, match="unknown engine 'tgi'"):
        open_engine(EngineOptions(engine="tgi"))


def test_predict_without_run_or_endpoint_says_what_to_give():
    result = CliRunner().invoke(app, ["predict", "--text", "孙丽在南京。"])
    assert result.exit_code == 1
    assert result.output.strip().endswith(
        "nerft: error: nothing to predict with: give --run RUN_DIR (a trained run) or --endpoint URL (a server)"
    )


def test_predict_refuses_data_and_text_together(tmp_path):
    result = CliRunner().invoke(
        app, ["predict", "--endpoint", "http://127.0.0.1:9", "--data", "x.jsonl", "--text", "孙丽"]
    )
    assert result.exit_code == 1
    assert "nerft: error: give --data or --text, not both" in result.output


def test_predict_with_a_folder_that_is_no_run_fails_cleanly(tmp_path):
    result = CliRunner().invoke(app, ["predict", "--run", str(tmp_path), "--text", "孙丽"])
    assert result.exit_code == 1
    assert f"nerft: error: {tmp_path}: not a nerft run folder (no run.json)" in result.output


def test_an_engine_that_answers_too_few_leaves_no_output_file(tmp_path):
    class Short(ScriptedEngine):
        def generate(self, requests):
            yield from list(super().generate(requests))[:-1]

    out = tmp_path / "pred.jsonl"
    with pytest.raises(RuntimeError, match="answered 4 of 5 requests"):
        predict_records(records(), Short(ANSWERS), COMPACT, out=out)
    assert not out.exists()


@pytest.mark.parametrize(
    "facts, expected",
    [
        (dict(endpoint=True, cuda_vllm=True, cpu_vllm=True, parameters=10**9, sentences=None), "openai"),
        (dict(endpoint=False, cuda_vllm=True, cpu_vllm=False, parameters=None, sentences=1), "vllm"),
        # a CPU with .venv-vllm: vLLM for a real model and enough sentences (or a stream)
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=True, parameters=134_515_008, sentences=300), "vllm"),
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=True, parameters=134_515_008, sentences=None), "vllm"),
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=True, parameters=134_515_008, sentences=64), "vllm"),
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=True, parameters=134_515_008, sentences=63), "hf"),
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=True, parameters=150_000, sentences=300), "hf"),  # tiny
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=True, parameters=None, sentences=300), "hf"),  # unknown size
        (dict(endpoint=False, cuda_vllm=False, cpu_vllm=False, parameters=134_515_008, sentences=300), "hf"),
    ],
)
def test_the_default_engine_is_the_faster_one_for_the_model_and_input(facts, expected):
    from nerft.inference.options import choose_engine

    assert choose_engine(**facts) == expected


# ---- what a resumed run must find again --------------------------------------------------------


def test_the_resume_record_holds_everything_that_decides_an_answer(tmp_path):
    import hashlib

    from nerft.inference.predictions import prediction_source

    data = tmp_path / "in.jsonl"
    data.write_bytes(b'{"text": "x"}\n')
    record = prediction_source(ScriptedEngine(ANSWERS).describe(), COMPACT, max_chars=120, input_file=data)
    prompt = hashlib.sha256(f"{COMPACT.system}\n{COMPACT.user_message('')}".encode()).hexdigest()[:16]
    assert record == {
        "engine": "scripted",
        "model": "m1",
        "prompt": "compact",
        "prompt_sha256": prompt,
        "labels": ",".join(COMPACT.labels),
        "piece_chars": 120,
        "input": f"{data.resolve()} (14 bytes, sha256 {hashlib.sha256(data.read_bytes()).hexdigest()[:16]})",
    }


def test_a_partial_file_of_another_input_file_is_refused_and_restart_starts_over(tmp_path):
    out, first, second = tmp_path / "pred.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("a\n")
    second.write_text("b, the same sentences in another file\n")
    with pytest.raises(ServerError):
        predict_records(records(), ScriptedEngine(ANSWERS, fail_after=2), COMPACT, out=out, input_file=first)
    with pytest.raises(DataError) as info:
        predict_records(records(), ScriptedEngine(ANSWERS), COMPACT, out=out, input_file=second)
    assert str(info.value) == (
        f"{out}.partial was started with other settings: input {first.resolve()} (2 bytes, sha256 "
        f"{_sha(first)}), not {second.resolve()} (38 bytes, sha256 {_sha(second)}) "
        "(--restart deletes them and predicts everything again)"
    )
    again = ScriptedEngine(ANSWERS)
    counts = predict_records(records(), again, COMPACT, out=out, input_file=second, restart=True)
    assert [request.text for request in again.seen] == TEXTS  # nothing kept
    assert (counts.resumed, counts.predicted) == (0, 5)
    assert [row["text"] for row in read_rows(out)] == TEXTS


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_predict_cli_refuses_to_resume_with_another_prompt_format(tmp_path):
    """Killed with --prompt compact, rerun with --prompt seed: "75 kept from an earlier run", exit 0,
    a file of two formats' answers. Now one line naming the difference; --restart starts over."""
    from test_openai_engine import FakeServer

    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--data", str(data), "--out", str(out), "--concurrency", "1", "--retries", "0"]
    with FakeServer(behaviour=lambda n, body: (200, None) if n < 2 else (502, {"detail": "bad gateway"})) as server:
        result = CliRunner().invoke(app, [*argv, "--endpoint", server.url, "--prompt", "compact"])
    assert result.exit_code == 1 and "2 of 5 predictions kept" in result.stderr
    with FakeServer() as server:
        result = CliRunner().invoke(app, [*argv, "--endpoint", server.url, "--prompt", "seed"])
        assert result.exit_code == 1 and server.requests == []
        assert result.stderr.startswith(
            f"nerft: error: {out}.partial was started with other settings: prompt compact, not seed;"
        )
        assert len(result.stderr.splitlines()) == 1 and "--restart" in result.stderr
        result = CliRunner().invoke(app, [*argv, "--endpoint", server.url, "--prompt", "seed", "--restart"])
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 5 and "kept from an earlier run" not in result.stderr
    assert [row["text"] for row in read_rows(out)] == TEXTS
