"""`nerft eval` predicting through an endpoint: the prompt format comes from --run or --prompt, the
engine options are `nerft predict`'s (defined once), and --report/--errors work in every mode."""

import inspect
import json

import pytest
from test_openai_engine import FakeServer
from typer.testing import CliRunner

from nerft.cli import evaluate, predict
from nerft.cli.main import app
from nerft.prompts import get_format
from nerft.runfolder import RunInfo, write_run

GOLD = [{"text": "张三在北京大学读书。", "label": {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}}}]
SEED_ANSWER = json.dumps(
    [{"label": "name", "text": "张三"}, {"label": "organization", "text": "北京大学"}], ensure_ascii=False
)


@pytest.fixture
def gold_file(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in GOLD), encoding="utf-8")
    return path


@pytest.fixture
def seed_run(tmp_path):
    run_dir = tmp_path / "run-seed"
    run_dir.mkdir()
    write_run(RunInfo(run_dir=run_dir, base_model="nerft:tiny-qwen2", template="qwen", prompt="seed"))
    return run_dir


def answer(n, body):
    return 200, {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": SEED_ANSWER}, "finish_reason": "stop"}]
    }


def expected_messages(prompt):
    fmt = get_format(prompt)
    return [{"role": "system", "content": fmt.system}, {"role": "user", "content": fmt.user_message(GOLD[0]["text"])}]


def test_eval_endpoint_with_a_seed_run_sends_the_seed_prompt(gold_file, seed_run, tmp_path):
    with FakeServer(behaviour=answer) as server:
        result = CliRunner().invoke(
            app, ["eval", "--run", str(seed_run), "--endpoint", server.url, "--gold", str(gold_file), "--json"]
        )
    assert result.exit_code == 0, result.output
    assert server.requests[0]["messages"] == expected_messages("seed")
    assert json.loads(result.stdout)["micro"]["f1"] == 1.0
    assert (seed_run / "eval" / "gold" / "report.json").is_file()


def test_eval_endpoint_alone_takes_the_prompt_option(gold_file, tmp_path):
    with FakeServer(behaviour=answer) as server:
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "--endpoint",
                server.url,
                "--prompt",
                "seed",
                "--gold",
                str(gold_file),
                "--out-dir",
                str(tmp_path / "e"),
            ],
        )
    assert result.exit_code == 0, result.output
    assert server.requests[0]["messages"] == expected_messages("seed")


def test_eval_endpoint_writes_report_and_errors_where_asked(gold_file, tmp_path):
    report, errors = tmp_path / "mine" / "r.json", tmp_path / "mine" / "e.jsonl"
    with FakeServer(behaviour=answer) as server:
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "--endpoint",
                server.url,
                "--prompt",
                "seed",
                "--gold",
                str(gold_file),
                "--out-dir",
                str(tmp_path / "e"),
                "--report",
                str(report),
                "--errors",
                str(errors),
            ],
        )
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text(encoding="utf-8"))["micro"]["f1"] == 1.0
    assert (tmp_path / "mine" / "r.md").is_file()
    assert errors.read_text(encoding="utf-8") == ""
    assert (tmp_path / "e" / "predictions.jsonl").is_file()
    assert not (tmp_path / "e" / "report.json").exists()


def test_eval_sends_the_engine_options_predict_has(gold_file, tmp_path):
    with FakeServer(behaviour=answer, api_key="k") as server:
        result = CliRunner().invoke(
            app,
            [
                "eval",
                "--endpoint",
                server.url,
                "--prompt",
                "seed",
                "--gold",
                str(gold_file),
                "--out-dir",
                str(tmp_path / "e"),
                "--api-key",
                "k",
                "--model",
                "tiny-lora",
                "--structured",
                "--retries",
                "0",
                "--timeout",
                "5",
                "--concurrency",
                "1",
            ],
        )
    assert result.exit_code == 0, result.output
    assert server.headers[0]["Authorization"] == "Bearer k"
    assert server.requests[0]["model"] == "tiny-lora"
    assert "structured_outputs" in server.requests[0]


def test_predict_and_eval_declare_the_engine_options_once():
    shared = (
        "engine",
        "endpoint",
        "prompt",
        "model",
        "api_key",
        "batch_size",
        "concurrency",
        "structured",
        "retries",
        "timeout",
        "run_dir",
    )
    predict_params = inspect.signature(predict.command).parameters
    eval_params = inspect.signature(evaluate.command).parameters
    for name in shared:
        assert predict_params[name].annotation == eval_params[name].annotation, name
        assert predict_params[name].default == eval_params[name].default, name


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_wrong_engine_or_prompt_lists_the_choices(command, gold_file):
    for option, value, choices in (
        ("--engine", "tgi", "'hf', 'vllm', 'openai'"),
        ("--prompt", "fancy", "'compact', 'seed'"),
    ):
        result = CliRunner().invoke(
            app, [command, option, value, "--gold" if command == "eval" else "--data", str(gold_file)]
        )
        assert result.exit_code == 2
        assert choices in result.output


def test_eval_labels_option_sets_the_table(gold_file, tmp_path):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"predict": "name:张三\nbook:北京"}, ensure_ascii=False) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--gold",
            str(gold_file),
            "--predictions",
            str(predictions),
            "--labels",
            "name,organization,book",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data["labels"]) == ["book", "name", "organization"]
    assert data["other_labels"] == {}
    # name F1 1, organization F1 0 (missed), book F1 0 (one false positive): macro 1/3
    assert data["macro"]["f1"] == pytest.approx(1 / 3)
