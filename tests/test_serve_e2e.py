"""End to end on the tiny run: `nerft serve` starts the real `llamafactory-cli api` on loopback,
`nerft eval --endpoint` scores the bundled dev sample through it, `nerft predict --engine hf`
answers exactly what the server answers, and Ctrl-C stops the server and its child."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest
from conftest import start_nerft_serve
from rows import without_confidences
from typer.testing import CliRunner

from nerft.cli.main import app

pytestmark = pytest.mark.slow
STARTUP_TIMEOUT = 300


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory, one_thread):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the server child too: equal thread counts, equal arithmetic
    process, info = start_nerft_serve([str(tiny_run), "--port", "0"], log, env=env, timeout=STARTUP_TIMEOUT)
    yield {**info, "process": process, "log": log}
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_serve_prints_the_url_and_model_of_a_loopback_server(served, tiny_run):
    assert served["url"].startswith("http://127.0.0.1:") and served["url"].endswith("/v1")
    assert served["model"] == tiny_run.name
    assert "llamafactory-cli api" in served["log"].read_text()


def test_eval_endpoint_scores_the_sample_through_the_server(served, tiny_run, sample_dir):
    result = CliRunner().invoke(
        app, ["eval", "--endpoint", served["url"], "--run", str(tiny_run), "--gold", str(sample_dir / "dev.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert "Micro Avg." in result.output
    out_dir = tiny_run / "eval" / "dev"
    report = json.loads((out_dir / "report.json").read_text())
    assert report["records"] == 9
    assert report["prediction"]["engine"] == {
        "engine": "openai",
        "endpoint": served["url"],
        "model": served["model"],
        "grounded": False,  # LLaMA-Factory's server takes no regular expression: its answers are free
        "structured": False,
    }
    assert report["prediction"]["predicted"] == 9
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    gold = [json.loads(line)["text"] for line in (sample_dir / "dev.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == gold
    # A random model gets nothing right: every sentence is an error, listed in errors.jsonl.
    assert len((out_dir / "errors.jsonl").read_text().splitlines()) == report["sentences_with_errors"] == 9


def test_hf_engine_answers_exactly_what_the_server_answers(served, tiny_run, sample_dir, tmp_path):
    runner = CliRunner()
    dev = str(sample_dir / "dev.jsonl")
    by_server, by_hf = tmp_path / "server.jsonl", tmp_path / "hf.jsonl"
    result = runner.invoke(
        app, ["predict", "--run", str(tiny_run), "--endpoint", served["url"], "--data", dev, "--out", str(by_server)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            *["predict", "--run", str(tiny_run), "--engine", "hf", "--batch-size", "4", "--no-grounded"],
            *["--data", dev, "--out", str(by_hf)],
        ],
    )
    assert result.exit_code == 0, result.output
    server_rows = [json.loads(line) for line in by_server.read_text().splitlines()]
    hf_rows = [json.loads(line) for line in by_hf.read_text().splitlines()]
    assert all(row["confidence"] is None for row in server_rows)  # LLaMA-Factory's server sends no logprobs
    assert without_confidences(hf_rows) == server_rows
    assert len({row["predict"] for row in hf_rows}) == 9  # answers differ sentence to sentence


def test_ctrl_c_stops_the_server_and_its_child(served):
    process = served["process"]
    port = int(served["url"].rsplit(":", 1)[1].split("/")[0])
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert "server stopped (exit code 0)" in served["log"].read_text()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(served["pid"])], capture_output=True, text=True
    ).stdout.strip()
    assert state in ("", "Z")


def test_sigkill_of_nerft_serve_takes_the_llamafactory_server_with_it(tiny_run, tmp_path):
    # SIGKILL leaves nerft no time to stop its child: the kernel sends it SIGTERM (PR_SET_PDEATHSIG).
    process, info = start_nerft_serve([str(tiny_run), "--port", "0"], tmp_path / "serve.log", timeout=STARTUP_TIMEOUT)
    port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
    process.kill()
    process.wait(timeout=10)
    for _ in range(300):
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(info["pid"])], capture_output=True, text=True)
        if state.stdout.strip() in ("", "Z"):
            break
        time.sleep(0.1)
    assert state.stdout.strip() in ("", "Z")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
