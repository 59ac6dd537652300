"""The one place nerft runs external programs (`llamafactory-cli`, `vllm`, ...).

    from nerft.process import run_program
    code = run_program(["llamafactory-cli", "train", "run/llamafactory_train.yaml"],
                       env={"FORCE_TORCHRUN": "1"}, install_hint="pip install llamafactory==0.9.5")

Rules it enforces for every caller:
- the command is an argument list, never a shell string;
- the exact command (and the environment variables added to it) is logged to stderr first;
- the child's stdout and stderr are streamed as they come (stdout lines go to our stdout unless
  `stdout_to_stderr=True`, which commands use when their own stdout is reserved for results);
  `on_line` sees every line too, e.g. to keep the last lines of a log;
- the child's exit code is returned, not interpreted: the command passes it through;
- a program that is not installed raises `EnvironmentProblem` saying what to install;
- the child's PATH starts with the folder the program was found in (`child_path`), so what it
  starts by name comes from the same environment.

`start_program(..., talk=True)` keeps the child's stdin and stdout for a protocol (the vLLM
worker) and streams its stderr; `read_program` runs a probe whose output is data (nvidia-smi,
lscpu, a worker's `--probe`): captured, not logged.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from nerft.errors import EnvironmentProblem


def find_program(program: str, *, install_hint: str | None = None) -> str:
    """Return the path of `program`, looking beside the running Python first (the venv's bin/).

    The venv's bin/ is not always on PATH (e.g. `.venv/bin/nerft` run directly), yet that is
    where `llamafactory-cli` was installed along with nerft.
    """
    if os.sep in program:
        if Path(program).is_file() and os.access(program, os.X_OK):
            return program
    else:
        beside_python = Path(sys.executable).parent / program
        if beside_python.is_file() and os.access(beside_python, os.X_OK):
            return str(beside_python)
        found = shutil.which(program)
        if found:
            return found
    hint = install_hint or f"install {program} and make sure it is on PATH"
    raise EnvironmentProblem(f"program not found: {program}", hint=hint)


def child_path(program: str, path: str | None) -> str:
    """PATH for a child: the folder `program` was found in first, then `path`.

    A program finds its own environment's tools: `llamafactory-cli train` starts `torchrun` by
    name, and found beside nerft's Python (a venv run as `.venv/bin/nerft`, not activated) it
    must start that venv's torchrun, not fail or pick another environment's.
    """
    folder = str(Path(program).parent)
    entries = [entry for entry in (path or os.defpath).split(os.pathsep) if entry and entry != folder]
    return os.pathsep.join([folder, *entries])


_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


def format_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command as a user could paste it into a shell (added variables first, secrets masked)."""
    prefix = [
        f"{key}={'***' if _SECRET.search(key) else shlex.quote(str(value))}" for key, value in (env or {}).items()
    ]
    return " ".join([*prefix, *(shlex.quote(str(arg)) for arg in argv)])


def run_program(
    argv: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    install_hint: str | None = None,
    stdout_to_stderr: bool = False,
    on_line: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run `argv` as a child process, stream its output, and return its exit code.

    `env` holds variables added to (not replacing) this process's environment. Ctrl-C is passed
    to the child, which gets 30 s to stop cleanly before SIGTERM and SIGKILL (`RunningProgram.stop`);
    its exit code is still returned.
    """
    program = start_program(
        argv, env=env, cwd=cwd, install_hint=install_hint, stdout_to_stderr=stdout_to_stderr, on_line=on_line, log=log
    )
    try:
        code = program.child.wait()
    except KeyboardInterrupt:
        return program.stop(grace=30)
    program.join_output()
    return code


def read_program(
    argv: Sequence[str | os.PathLike], *, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a probe and capture its output (text), stdin closed, nothing logged. An `OSError` when
    it cannot start, a `TimeoutError` (an `OSError` too) after `timeout` seconds."""
    args = [str(arg) for arg in argv]
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{args[0]} did not answer within {timeout:g} s") from None


class RunningProgram:
    """A child started by `start_program`, its output streamed by background threads.

    Started with `talk=True`, `stdin` and `stdout` are text streams to and from the child."""

    def __init__(self, child: subprocess.Popen, pumps: list[threading.Thread], own_group: bool):
        self.child = child
        self.pumps = pumps
        self.own_group = own_group
        self.stdin: io.TextIOWrapper | None = None
        self.stdout: io.TextIOWrapper | None = None

    def poll(self) -> int | None:
        return self.child.poll()

    def join_output(self) -> None:
        for thread in self.pumps:
            thread.join()

    def signal(self, signum: int) -> None:
        if self.child.poll() is not None:
            return
        if self.own_group:  # reach the workers a server starts, too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signum)
        else:
            self.child.send_signal(signum)

    def stop(self, grace: float = 30.0) -> int:
        """Ctrl-C the child and wait `grace` seconds for it to finish; then SIGTERM, then SIGKILL."""
        for signum, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
            self.signal(signum)
            try:
                code = self.child.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.join_output()
        return code


def start_program(
    argv: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    install_hint: str | None = None,
    stdout_to_stderr: bool = False,
    on_line: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
    own_group: bool = False,
    talk: bool = False,
    die_with_parent: bool = False,
) -> RunningProgram:
    """Start `argv` like `run_program` does, without waiting: for servers that run until stopped.

    `own_group=True` starts it in its own process group, so a Ctrl-C in the terminal reaches only
    nerft, which then stops the child and everything it started (`RunningProgram.stop`).
    `talk=True` gives the caller the child's stdin and stdout (UTF-8 text); only stderr is streamed.
    `die_with_parent=True` (Linux) sends the child SIGTERM when nerft dies, even by SIGKILL, when
    nothing could stop it: a server must not go on serving, orphaned. The caller's thread must
    outlive the child (the kernel watches the thread that started it).
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError("run_program takes an argument list, not a string")
    args = [str(arg) for arg in argv]
    if not args:
        raise ValueError("run_program needs a program to run")
    args[0] = find_program(args[0], install_hint=install_hint)
    extra_env = {key: str(value) for key, value in (env or {}).items()}
    child_env = {**os.environ, **extra_env}
    child_env["PATH"] = child_path(args[0], child_env.get("PATH"))
    write_log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    write_log(f"$ {format_command(args, extra_env)}")

    out = sys.stderr if stdout_to_stderr else sys.stdout
    try:
        child = subprocess.Popen(
            args,
            env=child_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
            bufsize=0,
            start_new_session=own_group,
            preexec_fn=_parent_death_signal() if die_with_parent else None,
        )
    except FileNotFoundError as exc:  # removed between find_program and Popen, or a bad cwd
        raise EnvironmentProblem(f"cannot start {args[0]}: {exc.strerror}", hint=install_hint) from None

    lock = threading.Lock()

    def pump(stream, target) -> None:
        # Read whatever is available rather than whole lines: progress bars redraw with '\r' and
        # would otherwise only show up when they finish.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            chunk = stream.read(65536)  # unbuffered pipe: returns what is there
            text = decoder.decode(chunk, final=not chunk)
            with lock:
                if text:
                    target.write(text)
                    target.flush()
                if on_line is not None:
                    pending += text
                    *lines, pending = re.split(r"\r\n|\r|\n", pending)
                    if not chunk and pending:
                        lines.append(pending)
                    for line in lines:
                        on_line(line)
            if not chunk:
                break
        stream.close()

    streams = [(child.stderr, sys.stderr)] if talk else [(child.stdout, out), (child.stderr, sys.stderr)]
    pumps = [threading.Thread(target=pump, args=stream, daemon=True) for stream in streams]
    for thread in pumps:
        thread.start()
    program = RunningProgram(child, pumps, own_group)
    if talk:
        program.stdin = io.TextIOWrapper(io.BufferedWriter(child.stdin), encoding="utf-8")
        program.stdout = io.TextIOWrapper(io.BufferedReader(child.stdout), encoding="utf-8")
    return program


def _parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` asking the kernel to SIGTERM the child when this process dies
    (`prctl(PR_SET_PDEATHSIG)`); None where there is no such call (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # loaded before the fork
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def in_child() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # nerft died between the fork and the prctl call
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child
