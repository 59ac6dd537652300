"""Files a user can break end in one `nerft: error: FILE[:LINE]: reason` line and exit 1, never a
traceback: run.json, a model's config.json (doctor), `*_meta.json`, a server's /v1/models answer."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import DataError, ModelError, ServerError
from nerft.io import json_line, read_json
from nerft.runfolder import RUN_SCHEMA_VERSION, RunInfo, load_run, write_run


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_clean_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("nerft: error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return last


def run_folder(tmp_path, manifest):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "run.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest), encoding="utf-8")
    return run_dir


GOOD = {"base_model": "nerft:tiny-qwen2", "template": "qwen"}


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"template": "qwen"}, "run.json: base_model: missing (required)"),  # TypeError before
        ([GOOD], "run.json: expected a JSON object (nerft's run manifest), found a list"),  # AttributeError before
        (
            {**GOOD, "labels": "name"},
            "run.json: labels: must be a list of label names, not str",
        ),  # iterated as n, a, m, e
        ({**GOOD, "labels": ["name", 3]}, "run.json: labels.1: Input should be a valid string"),
        ({**GOOD, "prompt": "fancy"}, "run.json: prompt: unknown prompt format 'fancy'"),
        ({**GOOD, "finetuning_type": "qlora"}, "run.json: finetuning_type: Input should be 'lora', 'full' or 'freeze'"),
        ({**GOOD, "cutoff_len": "long"}, "run.json: cutoff_len: Input should be a valid integer"),
        ({**GOOD, "colour": "blue"}, "run.json: colour: unknown key"),
        (
            {**GOOD, "schema_version": 99},
            f"run.json: schema_version 99 is newer than this nerft reads ({RUN_SCHEMA_VERSION})",
        ),
        (
            '{"base_model": "m",\n "template": }',
            "run.json:2: broken JSON (nerft's run manifest) (Expecting value, column 14)",
        ),
        (b'{"base_model": "\xff"}', "run.json:1: not UTF-8 text (nerft's run manifest)"),
    ],
)
def test_a_broken_run_json_is_one_error_line(tmp_path, manifest, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "run.json"
    if isinstance(manifest, bytes):
        path.write_bytes(manifest)
    else:
        path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest), encoding="utf-8")
    for command in (["predict", "--run", run_dir, "--text", "张三"], ["serve", run_dir, "--dry-run"]):
        assert_clean_error(invoke(*command), message)


def test_an_unversioned_run_json_still_loads_and_is_written_with_its_version(tmp_path):
    run_dir = run_folder(tmp_path, {**GOOD, "adapter_dir": ".", "prompt": "seed"})  # as nerft wrote it before versions
    info = load_run(run_dir)
    assert (info.schema_version, info.prompt, info.adapter_dir) == (1, "seed", run_dir)
    write_run(info)
    assert json.loads((run_dir / "run.json").read_text())["schema_version"] == RUN_SCHEMA_VERSION


def test_run_info_is_validated_in_code_too(tmp_path):
    with pytest.raises(Exception, match="labels"):
        RunInfo(run_dir=tmp_path, base_model="m", template="qwen", labels="name")


def test_read_json_names_file_line_and_reason(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{\n  "a": 1,\n  "b": ]\n}', encoding="utf-8")
    with pytest.raises(DataError, match=r"x.json:3: broken JSON \(Expecting value, column 8\)$"):
        read_json(path)
    with pytest.raises(ModelError, match=r"missing.json: no such file"):
        read_json(tmp_path / "missing.json", error=ModelError)
    path.write_bytes(b"\xef\xbb\xbf[1]")  # a byte-order mark is accepted
    assert read_json(path, expect=list) == [1]
    with pytest.raises(DataError, match=r"x.json: expected a JSON object, found a list"):
        read_json(path)
    path.write_bytes(b'{"a":\n"\xe9"}')
    with pytest.raises(DataError, match=r"x.json:2: not UTF-8 text \(byte 7\)"):
        read_json(path)
    with pytest.raises(DataError, match=r"f.jsonl:7: JSON nested too deeply"):
        json_line("[" * 100000 + "]" * 100000, "f.jsonl", 7, expect=list)
    with pytest.raises(DataError, match=r"f.jsonl:7: expected a JSON object, found a number"):
        json_line("3", "f.jsonl", 7)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {
                "model_type": "qwen2",
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "intermediate_size": 128,
                "vocab_size": 100,
            },
            "config.json: not a decoder model's config (num_attention_heads: missing)",
        ),  # KeyError before
        (
            {
                "hidden_size": "64",
                "num_hidden_layers": 2,
                "intermediate_size": 128,
                "vocab_size": 100,
                "num_attention_heads": 2,
            },
            "config.json: not a decoder model's config (hidden_size: expected a positive whole number, found '64')",
        ),
        ([1, 2], "config.json: expected a JSON object (the model's config), found a list"),
    ],
)
def test_doctor_with_a_broken_model_config_is_one_error_line(tmp_path, config, message):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    args = tmp_path / "llamafactory_train.yaml"
    args.write_text(
        yaml.safe_dump(
            {"model_name_or_path": str(model), "stage": "sft", "finetuning_type": "lora", "template": "qwen"}
        )
    )
    assert_clean_error(invoke("doctor", "--config", args), message)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("{broken", "mine_meta.json:1: broken JSON (nerft prepare's notes on a dataset)"),  # JSONDecodeError before
        ("[]", "mine_meta.json: expected a JSON object (nerft prepare's notes on a dataset), found a list"),
        ('{"datasets": ["mine_train"]}', "mine_meta.json: datasets: not as `nerft prepare` writes it"),
    ],
)
def test_a_broken_meta_json_is_one_error_line(tmp_path, meta, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine_train.json").write_text('[{"instruction": "x", "input": "y", "output": "z"}]', encoding="utf-8")
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    (data / "dataset_info.json").write_text(
        json.dumps({"mine_train": {"file_name": "mine_train.json", "columns": columns}})
    )
    (data / "mine_meta.json").write_text(meta, encoding="utf-8")
    result = invoke(
        "train",
        "tiny-cpu",
        "-o",
        tmp_path / "run",
        "--dry-run",
        "--set",
        "data.train=null",
        "--set",
        "data.dev=null",
        "--set",
        f"dataset.dataset_dir={data}",
        "--set",
        "dataset.dataset=mine_train",
    )
    assert_clean_error(result, message)


class ModelsServer:
    """A server whose GET /v1/models answers `body` (bytes) with status 200."""

    def __init__(self, body: bytes, content_type="text/html"):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"<html>It works!</html>",
            "/v1/models: answered 200 with something that is not JSON: '<html>It works!</html>'",
        ),
        (b"", "/v1/models: answered 200 with an empty body, not JSON"),
        (b'["tiny-lora"]', "/v1/models: expected a JSON object (HTTP 200 answer), found a list"),
        (b'{"data": "tiny-lora"}', '/v1/models: the answer has no list of models under "data"'),
        (b'{"data": [', "/v1/models:1: broken JSON (HTTP 200 answer)"),
    ],
)
def test_a_non_json_models_answer_is_one_error_line(body, message):
    with ModelsServer(body) as server:
        result = invoke("predict", "--endpoint", server.url, "--text", "张三", "--retries", "0")
        assert_clean_error(result, message)
        # `nerft serve` waits for the same answer before it reports the server ready.
        from nerft.serving.server import wait_until_ready

        class Started:
            url, model = server.url, "tiny-lora"

            class program:
                @staticmethod
                def poll():
                    return None

        with pytest.raises(ServerError, match="/v1/models"):
            wait_until_ready(Started(), timeout=5)
