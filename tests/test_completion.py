"""Shell completion (Typer's --install-completion / --show-completion) and progress on stderr."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nerft.progress import progress

BIN = Path(sys.executable).parent


def run_nerft(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "nerft"), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )


def complete(words: str, cword: int) -> list[str]:
    """What bash completion asks nerft for: the candidates for word number `cword` of `words`."""
    result = run_nerft([], _NERFT_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_show_completion_prints_a_bash_script_for_nerft():
    result = run_nerft(["--show-completion", "bash"], _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert result.returncode == 0, result.stderr
    assert "_nerft_completion()" in result.stdout
    assert result.stdout.rstrip().endswith("complete -o default -F _nerft_completion nerft")


def test_commands_and_options_complete():
    assert complete("nerft pr", 1) == ["prepare", "predict"]
    assert complete("nerft re", 1) == ["report"]
    assert complete("nerft doctor --c", 2) == ["--config"]


def test_install_completion_writes_the_script_and_sources_it(tmp_path):
    result = run_nerft(
        ["--install-completion", "bash"], HOME=str(tmp_path), _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"
    )
    assert result.returncode == 0, result.stderr
    script = tmp_path / ".bash_completions" / "nerft.sh"
    assert "_nerft_completion" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_installed_script_completes_in_a_real_bash(tmp_path):
    run_nerft(["--install-completion", "bash"], HOME=str(tmp_path), _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    script = tmp_path / ".bash_completions" / "nerft.sh"
    code = f"source '{script}'; COMP_WORDS=(nerft ex); COMP_CWORD=1; _nerft_completion nerft; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["export"]


# --- progress ---------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(3), total=3, desc="predict", every=0)) == [0, 1, 2]
    output = terminal.getvalue()
    # a rich bar: the description, done/total, the rate, drawn once per item and at the end
    assert "predict" in output and "3/3" in output and "/s" in output
    assert output.count("predict") >= 3


def test_progress_without_total_counts_only(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    list(progress(iter("ab"), desc="read", every=3600))
    output = terminal.getvalue()
    assert "read 2 " in output and "/s" in output  # the count and the rate: no total, no bar


def test_progress_is_quiet_when_stderr_is_not_a_terminal(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    assert list(progress(range(5), total=5, desc="x", every=0)) == [0, 1, 2, 3, 4]
    assert pipe.getvalue() == ""
