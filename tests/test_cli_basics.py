import subprocess
import sys
import time

from typer.testing import CliRunner

from nerft.cli.main import app

COMMANDS = ["prepare", "train", "export", "serve", "predict", "eval", "download", "doctor", "report"]


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f" {command} " in result.output


def test_help_is_fast_and_imports_no_heavy_library():
    code = (
        "import sys, time; t = time.perf_counter();"
        "from nerft.cli.main import app;"
        "heavy = [m for m in ('torch', 'transformers', 'llamafactory', 'vllm', 'datasets', 'nerft.inference.engines') if m in sys.modules];"
        "print(heavy, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]", out
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nerft", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3


def test_choices_are_listed_by_help_and_errors():
    """--engine/--backend of serve and --engine/--prompt of predict, eval and demo are Enum choices."""
    runner = CliRunner()
    wrong = runner.invoke(app, ["serve", "some-run", "--backend", "onnx"])
    assert wrong.exit_code == 2 and "'onnx' is not one of 'huggingface', 'vllm', 'sglang'" in wrong.output
    for command in ("predict", "eval", "demo"):
        wrong = runner.invoke(app, [command, *(["some-run"] if command == "demo" else []), "--engine", "tgi"])
        assert wrong.exit_code == 2 and "'tgi' is not one of 'hf', 'vllm', 'openai'" in wrong.output, command
    assert "--engine <llamafactory|vllm>" in runner.invoke(app, ["serve", "--help"]).output


def test_demo_predict_and_eval_share_the_engine_options():
    import inspect

    from nerft.cli import demo, evaluate, predict

    def annotations(module):
        return {name: parameter.annotation for name, parameter in inspect.signature(module.command).parameters.items()}

    shared = ("engine", "endpoint", "model", "api_key", "structured")
    first = annotations(predict)
    for module in (evaluate, demo):
        theirs = annotations(module)
        assert {name: theirs[name] for name in shared} == {name: first[name] for name in shared}, module.__name__
