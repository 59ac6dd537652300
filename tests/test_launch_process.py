"""`nerft.process.run_program`: the one function that runs external programs."""

from __future__ import annotations

import sys

import pytest

from nerft.errors import EnvironmentProblem
from nerft.process import child_path, format_command, run_program


def test_exit_code_is_passed_through_and_output_streamed(capsys):
    lines: list[str] = []
    code = run_program(
        [sys.executable, "-c", "import sys; print('实体'); sys.stderr.write('50%\\r100%\\n'); sys.exit(3)"],
        on_line=lines.append,
    )
    captured = capsys.readouterr()
    assert code == 3
    assert captured.out == "实体\n"
    assert "50%\r100%\n" in captured.err
    assert sorted(lines) == ["100%", "50%", "实体"]


def test_command_and_added_environment_are_logged_first(capsys):
    code = run_program(
        [sys.executable, "-c", "import os; print(os.environ['NERFT_PROBE'])"],
        env={"NERFT_PROBE": "a b"},
        stdout_to_stderr=True,
    )
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == ""
    first, second = captured.err.splitlines()[:2]
    assert first.startswith("$ NERFT_PROBE='a b' ") and first.endswith(
        "'import os; print(os.environ['\"'\"'NERFT_PROBE'\"'\"'])'"
    )
    assert second == "a b"


def test_the_child_finds_programs_of_its_own_folder_first(tmp_path, capsys, monkeypatch):
    # `.venv/bin/nerft` run with the venv not on PATH: llamafactory-cli starts `torchrun` by name.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "torchrun").write_text("#!/bin/sh\necho venv torchrun\n")
    (venv_bin / "torchrun").chmod(0o755)
    (venv_bin / "launcher").write_text("#!/bin/sh\nexec torchrun\n")
    (venv_bin / "launcher").chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert run_program([str(venv_bin / "launcher")]) == 0
    assert capsys.readouterr().out == "venv torchrun\n"


def test_child_path_puts_the_programs_folder_first_once():
    assert child_path("/venv/bin/llamafactory-cli", "/usr/bin:/venv/bin:/bin") == "/venv/bin:/usr/bin:/bin"
    assert child_path("/venv/bin/llamafactory-cli", None).startswith("/venv/bin:")


def test_missing_program_says_what_to_install():
    with pytest.raises(EnvironmentProblem) as info:
        run_program(["nerft-no-such-program"], install_hint="pip install llamafactory==0.9.5")
    assert str(info.value) == "program not found: nerft-no-such-program (pip install llamafactory==0.9.5)"


def test_a_shell_string_is_refused():
    with pytest.raises(TypeError):
        run_program("echo hi")  # type: ignore[arg-type]


def test_format_command_quotes_like_a_shell():
    assert (
        format_command(["llamafactory-cli", "train", "my run/x.yaml"], {"NNODES": "2"})
        == "NNODES=2 llamafactory-cli train 'my run/x.yaml'"
    )


def test_ctrl_c_is_passed_to_the_child_and_its_exit_code_returned(tmp_path):
    import os
    import signal
    import threading

    ready = tmp_path / "ready"
    # The child says it is ready, then sleeps; a SIGINT makes it exit 3 (its own clean stop).
    child = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(3))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )

    def interrupt_when_ready():
        while not ready.exists():
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to nerft

    # Python turns SIGINT into KeyboardInterrupt only where it was not ignored at start-up; a
    # shell's background job (`pytest &` in a script, nohup) starts with it ignored. An interactive
    # nerft has Python's handler, so the test sets it too.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_when_ready, daemon=True).start()
        assert run_program([sys.executable, "-c", child]) == 3
    finally:
        signal.signal(signal.SIGINT, previous)
