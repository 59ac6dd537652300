"""Starting a server, waiting until it answers, and stopping it cleanly.

    with running_server(command, host="127.0.0.1", port=8000) as server:
        ...  # server.url answers OpenAI requests for each of server.models

A server is ready when `GET /v1/models` answers 200 and lists the model names clients will use;
until then nerft watches the child, so a server that dies while loading fails at once with its
exit code instead of after the start-up timeout. The child runs in its own process group: Ctrl-C
reaches nerft only, which then stops the child and whatever it started (vLLM's workers).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nerft.errors import ConfigError, EnvironmentProblem, ServerError
from nerft.inference.engines.openai import answer_json, listed_models
from nerft.io import write_text_atomic
from nerft.process import RunningProgram, start_program
from nerft.runfolder import RunInfo, load_run
from nerft.serving.commands import SERVER_ENGINES, ServerCommand, llamafactory_api_command, vllm_server_command

DEFAULT_STARTUP_TIMEOUT = 900.0  # a 7B model on a slow disk takes minutes


@dataclass
class Server:
    url: str  # base URL of the OpenAI API, ending in /v1
    models: tuple[str, ...]  # the names clients ask for: one per run
    program: RunningProgram

    @property
    def model(self) -> str:
        """The name of the first run's model (of a one-run server, its only one)."""
        return self.models[0]


def client_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "*") else ("::1" if host == "::" else host)


def base_url(host: str, port: int) -> str:
    host = client_host(host)
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`."""
    import ipaddress

    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def check_exposure(host: str, api_key: str | None, *, insecure: bool, warn: Callable[[str], None]) -> None:
    """A server reachable from other machines needs an API key, or `--insecure` (with a warning)."""
    if is_loopback(host) or api_key:
        return
    if not insecure:
        raise ConfigError(
            f"--host {host} lets other machines use the server, and there is no --api-key",
            hint="give --api-key KEY (clients send it as a bearer token), or --insecure to serve without one",
        )
    warn(f"warning: serving on {host} without --api-key (--insecure): anyone who can reach this machine can use it")


def listening_note(host: str, port: int) -> str | None:
    """Where other machines reach a server bound to every interface (the URL nerft prints is the
    one it checks from this machine); None for a server bound to one address."""
    if host not in ("0.0.0.0", "::", "", "*"):
        return None
    name = socket.gethostname()
    return f"listening on every interface ({host or '*'}:{port}): from other machines http://{name}:{port}/v1"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((client_host(host), 0))
        return probe.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Fail in a second, not after the server has spent a minute loading, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServerError(
                f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --port (0 picks a free one)"
            ) from None


def wait_until_ready(
    server: Server,
    *,
    api_key: str | None = None,
    timeout: float = DEFAULT_STARTUP_TIMEOUT,
    interval: float = 0.5,
) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    with httpx.Client(headers=headers, timeout=5.0, trust_env=False) as client:
        while True:
            code = server.program.poll()
            if code is not None:
                raise ServerError(
                    f"the server exited with code {code} before answering on {server.url} (its log is above)"
                )
            try:
                response = client.get(server.url + "/models")
            except httpx.TransportError:
                pass
            else:
                if response.status_code == 200:
                    url = server.url + "/models"
                    served = [entry["id"] for entry in listed_models(answer_json(response, url), url)]
                    absent = [name for name in server.models if name not in served]
                    if not absent:
                        return
                    raise ServerError(f"{server.url}/models lists {served}, not {', '.join(map(repr, absent))}")
                if response.status_code in (401, 403):
                    raise ServerError(f"{server.url}/models refused nerft's API key (HTTP {response.status_code})")
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{server.url}: no answer within {timeout:.0f} s; the server was stopped",
                    hint="raise --startup-timeout",
                )
            time.sleep(interval)


@contextlib.contextmanager
def running_server(
    command: ServerCommand,
    *,
    host: str,
    port: int,
    api_key: str | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    log: Callable[[str], None] | None = None,
) -> Iterator[Server]:
    """Start `command`, yield once it answers, stop it (Ctrl-C, then harder) when the block ends."""
    if command.config_file is not None:
        import yaml

        write_text_atomic(command.config_file, yaml.safe_dump(command.config, sort_keys=False, allow_unicode=True))
    if command.missing:
        raise EnvironmentProblem(command.missing, hint=command.install_hint)
    check_port_free(host, port)
    with contextlib.ExitStack() as stack:
        env = dict(command.env)
        if command.private_tmpdir:
            env["TMPDIR"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="nerft-server-"))
        program = start_program(
            command.argv,
            env=env,
            install_hint=command.install_hint,
            stdout_to_stderr=True,
            log=log,
            own_group=True,
            die_with_parent=True,
        )
        server = Server(base_url(host, port), command.model_names, program)
        try:
            wait_until_ready(server, api_key=api_key, timeout=startup_timeout)
            yield server
        finally:
            program.stop()


def serve(
    command: ServerCommand,
    *,
    host: str,
    port: int,
    api_key: str | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    on_ready: Callable[[Server], None],
    log: Callable[[str], None],
) -> int:
    """Run `command` (from `server_command`, listening on host:port) until stopped: `on_ready` is
    called once the server answers."""
    server = None
    # SIGTERM (kill, service managers) stops the server like Ctrl-C does; SIGINT is handled
    # explicitly because a shell starts background jobs with it ignored (`nerft serve &`).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    try:
        with running_server(
            command, host=host, port=port, api_key=api_key, startup_timeout=startup_timeout, log=log
        ) as server:
            on_ready(server)
            code = server.program.child.wait()
    except KeyboardInterrupt:
        # Leaving running_server has stopped the child: Ctrl-C, then SIGTERM, then SIGKILL.
        if server is None:
            log("stopped before the server was ready")
            return 130
        log(f"server stopped (exit code {server.program.child.returncode})")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if code != 0:
        raise ServerError(f"the server exited with code {code} (its log is above)")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def server_command(
    run_dirs,
    *,
    engine: str = "llamafactory",
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    backend: str = "huggingface",
    log_requests: bool = False,
) -> ServerCommand:
    """The command that serves the runs in `run_dirs`, each named after its folder (one run: or
    `model_name`). Several runs need vLLM, which serves them as LoRA adapters of one base."""
    from pathlib import Path

    if engine not in SERVER_ENGINES:
        raise ConfigError(f"unknown server engine {engine!r} (choose from: {', '.join(SERVER_ENGINES)})")
    if engine == "vllm" and backend != "huggingface":
        raise ConfigError("--backend chooses LLaMA-Factory's backend; it does not apply to --engine vllm")
    if engine == "vllm" and log_requests:
        raise ConfigError("--log-requests is LLaMA-Factory's option; it does not apply to --engine vllm")
    if len(run_dirs) > 1:
        if engine == "llamafactory":
            raise ConfigError(
                "LLaMA-Factory's API server serves one adapter (its issue 5172): serve several runs with --engine vllm"
            )
        if model_name is not None:
            raise ConfigError(
                "--model-name names the model of one run; several runs are served under their folders' names"
            )
    runs = [load_run(run_dir) for run_dir in run_dirs]
    served: dict[str, RunInfo] = {}
    for run in runs:
        name = model_name or Path(run.run_dir).resolve().name
        if name in served:
            raise ConfigError(
                f"runs {served[name].run_dir} and {run.run_dir} would both be served as {name!r}",
                hint="give one of the folders another name",
            )
        served[name] = run
    if engine == "llamafactory":
        ((name, run),) = served.items()
        return llamafactory_api_command(
            run, host=host, port=port, model_name=name, api_key=api_key, backend=backend, log_requests=log_requests
        )
    return vllm_server_command(served, host=host, port=port, api_key=api_key)
