"""The openai engine against real HTTP servers on 127.0.0.1: requests, order, retries, errors, resuming."""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.records import CluenerRecord
from nerft.errors import ServerError
from nerft.inference.engines import ChatRequest
from nerft.inference.engines.openai import OpenAIEngine, normalize_base_url
from nerft.inference.options import EngineOptions
from nerft.inference.predict import open_engine, predict_records
from nerft.prompts import get_format

COMPACT = get_format("compact")
TEXTS = [
    "孙丽在南京开了书店。",
    "京东与沃尔玛合作。",
    "今天天气很好。",
    "湖人队的詹姆斯。",
    "他读了《围城》。",
    "央视报道了。",
]


class QuietServer(ThreadingHTTPServer):
    """A client that went away mid-answer (nerft stopping at an error) is no error of the server:
    its traceback would land in the captured output of the command under test."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class FakeServer:
    """An OpenAI-compatible server in a thread. `behaviour(n, body)` -> (status, payload) decides
    each chat completion (`n` counts them from 0); answers echo `answer_for(text)`."""

    def __init__(self, *, models=("tiny-lora",), behaviour=None, delay=None, api_key=None):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload):
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                    return self._send(401, {"detail": "Invalid API key."})
                entries = [m if isinstance(m, dict) else {"id": m, "object": "model"} for m in models]
                self._send(200, {"object": "list", "data": entries})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                    return self._send(401, {"detail": "Invalid API key."})
                text = body["messages"][1]["content"]
                if delay:
                    time.sleep(delay(text))
                status, payload = (behaviour or (lambda n, body: (200, None)))(n, body)
                if payload is None:
                    payload = {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer_for(text)},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                self._send(status, payload)

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def texts(self):
        return [body["messages"][1]["content"] for body in self.requests]


def answer_for(text: str) -> str:
    return {"孙丽在南京开了书店。": "name:孙丽\naddress:南京", "京东与沃尔玛合作。": "company:京东\ncompany:阿里"}.get(
        text, "无"
    )


def records(texts=TEXTS):
    return [CluenerRecord(text=text, labelled=False) for text in texts]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_base_url_gets_v1_only_when_it_has_no_path():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("https://example.org/openai/v1") == "https://example.org/openai/v1"
    with pytest.raises(ServerError, match="not an http"):
        normalize_base_url("127.0.0.1:8000")


def test_request_is_greedy_bounded_stopped_and_authorised():
    with FakeServer() as server:
        engine = open_engine(EngineOptions(engine="openai", endpoint=server.url, api_key="s3cret"))
        generations = list(engine.generate([ChatRequest.for_text(COMPACT, TEXTS[0])]))
    assert generations[0].text == "name:孙丽\naddress:南京" and generations[0].finish_reason == "stop"
    assert server.requests == [
        {
            "model": "tiny-lora",
            "messages": [{"role": "system", "content": "NER"}, {"role": "user", "content": TEXTS[0]}],
            "temperature": 0,
            "max_tokens": 16 + 10 * 2,
            "stop": ["<|im_end|>"],
            "logprobs": True,
        }
    ]
    assert server.headers[0]["Authorization"] == "Bearer s3cret"


def test_structured_output_is_requested_in_vllm_s_field_when_asked():
    with FakeServer() as server:
        engine = open_engine(EngineOptions(engine="openai", endpoint=server.url, prompt="seed", structured=True))
        list(engine.generate([ChatRequest.for_text(get_format("seed"), TEXTS[0])]))
    constraint = server.requests[0]["structured_outputs"]
    assert list(constraint) == ["json"] and constraint["json"]["items"]["properties"]["label"]["enum"][0] == "name"


def test_the_model_is_the_one_served_or_the_only_lora_adapter():
    with FakeServer(models=["Qwen2.5-7B-Instruct", {"id": "ner", "parent": "Qwen2.5-7B-Instruct"}]) as server:
        assert OpenAIEngine(server.url).model == "ner"
    with FakeServer(models=["a", "b"]) as server:
        with pytest.raises(ServerError) as info:
            OpenAIEngine(server.url)
    assert str(info.value) == f"{server.url}/models lists 2 models (a, b) (choose one with --model)"
    with FakeServer(models=["a", "b"]) as server:
        assert OpenAIEngine(server.url, model="b").model == "b"


def test_a_server_of_several_runs_answers_under_the_name_chosen_and_refuses_one_it_does_not_serve():
    served = ["base", {"id": "a", "parent": "base"}, {"id": "b", "parent": "base"}]  # vLLM: two LoRA runs
    with FakeServer(models=served) as server:
        with pytest.raises(ServerError) as unnamed:
            OpenAIEngine(server.url)
        engine = OpenAIEngine(server.url, model="b")
        list(engine.generate([ChatRequest.for_text(COMPACT, TEXTS[0])]))
        with pytest.raises(ServerError) as unknown:
            OpenAIEngine(server.url, model="c")
    assert str(unnamed.value) == f"{server.url}/models lists 3 models (base, a, b) (choose one with --model)"
    assert server.requests[0]["model"] == "b"
    assert str(unknown.value) == f"{server.url}/models lists base, a, b, not 'c' (choose one with --model)"


def test_answers_come_back_in_request_order_whatever_order_they_finish():
    # The first request takes longest: one at a time this takes 2.1 s, four at a time about 0.9 s.
    slow_first = {text: 0.1 * (len(TEXTS) - i) for i, text in enumerate(TEXTS)}
    with FakeServer(delay=slow_first.get) as server:
        engine = OpenAIEngine(server.url, concurrency=4)
        start = time.monotonic()
        texts = [g.text for g in engine.generate(ChatRequest.for_text(COMPACT, t) for t in TEXTS)]
        elapsed = time.monotonic() - start
    assert texts == [answer_for(t) for t in TEXTS]
    assert sorted(server.texts()) == sorted(TEXTS)
    assert elapsed < 1.8


def test_overloaded_and_failing_requests_are_retried_with_backoff():
    # Every request fails twice (429, then 503) before it is answered.
    attempts: dict[str, int] = {}

    def flaky(n, body):
        text = body["messages"][1]["content"]
        attempts[text] = attempts.get(text, 0) + 1
        return {1: (429, {"error": {"message": "busy"}}), 2: (503, {"detail": "loading"})}.get(
            attempts[text], (200, None)
        )

    with FakeServer(behaviour=flaky) as server:
        engine = OpenAIEngine(server.url, concurrency=2, retries=2, backoff=0.01)
        texts = [g.text for g in engine.generate(ChatRequest.for_text(COMPACT, t) for t in TEXTS)]
    assert texts == [answer_for(t) for t in TEXTS]
    assert attempts == {text: 3 for text in TEXTS}


def test_a_refused_key_fails_at_once_without_retrying():
    with FakeServer(api_key="right") as server:
        with pytest.raises(ServerError) as info:
            OpenAIEngine(server.url, api_key="wrong", retries=3, backoff=0.01)
    assert str(info.value) == f"{server.url}/models: HTTP 401: Invalid API key. (check --api-key)"


def test_a_client_error_is_not_retried():
    with FakeServer(behaviour=lambda n, body: (400, {"error": {"message": "max_tokens too large"}})) as server:
        engine = OpenAIEngine(server.url, retries=3, backoff=0.01)
        with pytest.raises(ServerError) as info:
            list(engine.generate([ChatRequest.for_text(COMPACT, TEXTS[0])]))
    assert str(info.value) == f"{server.url}/chat/completions: HTTP 400: max_tokens too large"
    assert len(server.requests) == 1


def test_an_unreachable_server_fails_after_bounded_retries_naming_the_url():
    url = f"http://127.0.0.1:{unused_port()}/v1"
    start = time.monotonic()
    with pytest.raises(ServerError) as info:
        OpenAIEngine(url, retries=2, backoff=0.05)
    assert str(info.value).startswith(f"{url}/models: no answer after 3 attempts (ConnectError")
    assert 0.15 <= time.monotonic() - start < 5  # slept 0.05 + 0.1 between the attempts


def test_a_server_that_goes_away_keeps_the_predictions_and_a_restart_completes_them(tmp_path):
    out = tmp_path / "pred.jsonl"
    # Answers the first 3 requests, then fails for good (a crashed backend behind a proxy).
    with FakeServer(behaviour=lambda n, body: (200, None) if n < 3 else (502, {"detail": "bad gateway"})) as server:
        engine = OpenAIEngine(server.url, model="tiny-lora", concurrency=1, retries=1, backoff=0.01)
        with pytest.raises(ServerError) as info:
            predict_records(records(), engine, COMPACT, out=out)
    message = str(info.value)
    assert message.startswith(f"{server.url}/chat/completions: no answer after 2 attempts (HTTP 502: bad gateway)")
    assert f"3 of 6 predictions kept in {out}.partial" in message and "predict the other 3" in message
    assert not out.exists()

    with FakeServer() as healthy:
        engine = OpenAIEngine(healthy.url, concurrency=3)
        counts = predict_records(records(), engine, COMPACT, out=out)
    assert sorted(healthy.texts()) == sorted(TEXTS[3:])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == TEXTS
    assert [row["predict"] for row in rows] == [answer_for(t) for t in TEXTS]
    assert (counts.resumed, counts.predicted) == (3, 3)


def test_predict_cli_over_an_endpoint_writes_the_file_and_a_summary(tmp_path):
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS[:3]), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    with FakeServer() as server:
        result = CliRunner().invoke(app, ["predict", "--endpoint", server.url, "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [[(e["label"], e["text"], e["start"], e["end"]) for e in row["entities"]] for row in rows] == [
        [("name", "孙丽", 0, 2), ("address", "南京", 3, 5)],
        [("company", "京东", 0, 2)],
        [],
    ]
    assert rows[1]["dropped"] == [{"label": "company", "text": "阿里"}]
    assert f"wrote 3 predictions to {out}" in result.output
    assert "3 entities, 1 dropped (not in their sentence), 0 unparseable, 0 cut at the token limit" in result.output


def test_a_document_longer_than_cluener_s_sentences_is_asked_about_sentence_by_sentence(tmp_path):
    document = "".join(TEXTS) + "\n" + "".join(TEXTS)  # 48 + 1 + 48 characters: over an endpoint's 50
    data = tmp_path / "docs.jsonl"
    data.write_text(json.dumps({"id": "d1", "text": document}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    with FakeServer() as server:
        result = CliRunner().invoke(app, ["predict", "--endpoint", server.url, "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(server.texts()) == sorted(TEXTS * 2)  # each sentence its own request
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert (row["id"], row["text"]) == ("d1", document)
    assert [(e["label"], e["text"], e["start"], e["end"]) for e in row["entities"]] == [
        ("name", "孙丽", 0, 2),
        ("address", "南京", 3, 5),
        ("company", "京东", 10, 12),
        ("name", "孙丽", 49, 51),
        ("address", "南京", 52, 54),
        ("company", "京东", 59, 61),
    ]
    assert row["dropped"] == [{"label": "company", "text": "阿里"}]
    assert f"wrote 1 predictions to {out}" in result.output


def test_predict_text_prints_the_entities_and_tells_what_was_dropped():
    with FakeServer() as server:
        result = CliRunner().invoke(app, ["predict", "--endpoint", server.url, "--text", "京东与沃尔玛合作。"])
    assert result.exit_code == 0, result.output
    assert "company\t京东\n" in result.output
    assert "dropped, not in the sentence: company\t阿里" in result.output


def test_predict_cli_unreachable_endpoint_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{unused_port()}/v1"
    result = CliRunner().invoke(app, ["predict", "--endpoint", url, "--model", "m", "--retries", "0", "--text", "孙丽"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith(f"nerft: error: {url}/chat/completions: no answer after 1 attempts")
    )


def test_predict_reads_sentences_from_stdin_and_writes_json_lines_to_stdout():
    with FakeServer() as server:
        result = CliRunner().invoke(app, ["predict", "--endpoint", server.url], input=f"{TEXTS[0]}\n\n{TEXTS[2]}\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["text"], row["predict"]) for row in rows] == [(TEXTS[0], answer_for(TEXTS[0])), (TEXTS[2], "无")]
    assert "wrote 2 predictions in " in result.stderr


CONTENT_SHAPES = {
    "a string": ("name:孙丽", "name:孙丽", [("name", "孙丽")]),
    "OpenAI's content parts": (
        [{"type": "text", "text": "name:孙丽\n"}, {"type": "text", "text": "address:南京"}],
        "name:孙丽\naddress:南京",
        [("name", "孙丽"), ("address", "南京")],
    ),
    "bare string parts": (["name:", "孙丽"], "name:孙丽", [("name", "孙丽")]),
    "no parts": ([], "", []),
    "a refusal part": (
        [{"type": "refusal", "refusal": "no"}],
        '<not text: [{"type": "refusal", "refusal": "no"}]>',
        None,
    ),
    "null": (None, "<not text: null>", None),
    "missing": ("MISSING", "<not text: null>", None),
    "a number": (5, "<not text: 5>", None),
    "a boolean": (False, "<not text: false>", None),
    "an object": ({"name": ["孙丽"]}, '<not text: {"name": ["孙丽"]}>', None),
    "an empty object": ({}, "<not text: {}>", None),
}


@pytest.mark.parametrize("shape", sorted(CONTENT_SHAPES))
def test_any_shape_of_message_content_is_text_or_an_unparseable_answer(tmp_path, shape):
    content, predict, entities = CONTENT_SHAPES[shape]
    message = {"role": "assistant"} if content == "MISSING" else {"role": "assistant", "content": content}

    def behaviour(n, body):
        return 200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"text": TEXTS[0]}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    with FakeServer(behaviour=behaviour) as server:
        result = CliRunner().invoke(app, ["predict", "--endpoint", server.url, "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["predict"] == predict
    assert row["unparseable"] is (entities is None)
    assert [(e["label"], e["text"]) for e in row["entities"]] == (entities or [])
    unparseable = 1 if entities is None else 0
    assert f"{unparseable} unparseable" in result.output
    # Scoring the file reads the answer again, to the same verdict.
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"text": TEXTS[0], "label": {}}, ensure_ascii=False) + "\n", encoding="utf-8")
    scored = CliRunner().invoke(app, ["eval", "--gold", str(gold), "--predictions", str(out), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["unparseable"] == unparseable


@pytest.mark.parametrize("choices", [["x"], [{"message": [1]}], [], "x", [{"index": 0}]])
def test_an_answer_without_a_message_is_one_server_error(choices):
    with FakeServer(behaviour=lambda n, body: (200, {"choices": choices})) as server:
        result = CliRunner().invoke(app, ["predict", "--endpoint", server.url, "--retries", "0", "--text", TEXTS[0]])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"nerft: error: {server.url}/chat/completions: answer without choices[0].message"
    )
