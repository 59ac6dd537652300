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
        "heavy = [m for m in ('torch', 'transformers', 'llamafactory', 'vllm', 'datasets') if m in sys.modules];"
        "print(heavy, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]", out
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nerft", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3
