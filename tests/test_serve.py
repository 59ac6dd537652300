"""Serving: the llamafactory-cli api configuration, and a server's life (ready, died, too slow, stopped).

The life-cycle tests use a small Python HTTP server as the child, so they take a second; the real
`llamafactory-cli api` runs in tests/test_serve_e2e.py.
"""

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from nerft.errors import ServerError
from nerft.process import start_program
from nerft.runfolder import load_run
from nerft.serving.commands import ServerCommand, llamafactory_api_command
from nerft.serving.server import base_url, free_port, running_server

FAKE_SERVER = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
time.sleep(float(os.environ.get("DELAY", "0")))
if os.environ.get("EXIT"):
    sys.exit(int(os.environ["EXIT"]))
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        data = json.dumps({"object": "list", "data": [{"id": os.environ["API_MODEL_NAME"]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
print("fake server listening", flush=True)
try:
    HTTPServer(("127.0.0.1", int(os.environ["API_PORT"])), Handler).serve_forever()
except KeyboardInterrupt:
    print("fake server stopped cleanly", flush=True)
"""


def fake_command(port: int, **env) -> ServerCommand:
    return ServerCommand(
        [sys.executable, "-c", FAKE_SERVER],
        {"API_PORT": str(port), "API_MODEL_NAME": "ner", **env},
        ("ner",),
        "nothing to install",
    )


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_llamafactory_api_config_and_environment(tiny_run):
    run = load_run(tiny_run)
    command = llamafactory_api_command(run, host="127.0.0.1", port=8123, model_name="tiny-lora", api_key="k3y")
    assert command.argv == ["llamafactory-cli", "api", str(tiny_run / "llamafactory_api.yaml")]
    assert command.config == {
        "model_name_or_path": run.base_model,
        "adapter_name_or_path": str(tiny_run),
        "finetuning_type": "lora",
        "template": "qwen",
        "infer_backend": "huggingface",
    }
    assert command.env == {
        "API_HOST": "127.0.0.1",
        "API_PORT": "8123",
        "API_MODEL_NAME": "tiny-lora",
        "API_VERBOSE": "0",
        "API_KEY": "k3y",
    }


def test_unknown_backend_is_refused(tiny_run):
    from nerft.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown LLaMA-Factory backend 'tgi'"):
        llamafactory_api_command(load_run(tiny_run), host="127.0.0.1", port=1, model_name="x", backend="tgi")


def test_base_url_reaches_a_server_bound_to_every_address():
    assert base_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/v1"
    assert base_url("127.0.0.1", 9) == "http://127.0.0.1:9/v1"
    assert base_url("::1", 9) == "http://[::1]:9/v1"


def test_ready_server_answers_and_is_stopped_with_ctrl_c_when_the_block_ends(tmp_path):
    port = free_port()
    command = fake_command(port)
    command.config_file, command.config = tmp_path / "api.yaml", {"template": "qwen"}
    with running_server(command, host="127.0.0.1", port=port, startup_timeout=30) as server:
        assert server.url == f"http://127.0.0.1:{port}/v1" and server.model == "ner"
        assert httpx.get(server.url + "/models", trust_env=False).json()["data"] == [{"id": "ner"}]
        assert yaml.safe_load((tmp_path / "api.yaml").read_text()) == {"template": "qwen"}
    assert server.program.poll() is not None
    assert refuses_connections(port)


def test_a_server_that_dies_while_loading_fails_at_once_with_its_exit_code():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(ServerError) as info:
        with running_server(fake_command(port, EXIT="3"), host="127.0.0.1", port=port, startup_timeout=60):
            pass
    assert (
        str(info.value)
        == f"the server exited with code 3 before answering on http://127.0.0.1:{port}/v1 (its log is above)"
    )
    assert time.monotonic() - start < 20


def test_a_server_too_slow_to_answer_is_stopped():
    port = free_port()
    with pytest.raises(ServerError) as info:
        with running_server(fake_command(port, DELAY="60"), host="127.0.0.1", port=port, startup_timeout=1):
            pass
    assert (
        str(info.value)
        == f"http://127.0.0.1:{port}/v1: no answer within 1 s; the server was stopped (raise --startup-timeout)"
    )


def test_a_taken_port_fails_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError) as info:
            with running_server(fake_command(port), host="127.0.0.1", port=port):
                pass
    assert str(info.value).startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert str(info.value).endswith("(choose another --port (0 picks a free one))")


def test_a_server_serving_another_name_is_an_error():
    port = free_port()
    command = fake_command(port)
    command.model_names = ("ner", "other")
    with pytest.raises(ServerError, match=r"/models lists \['ner'\], not 'other'"):
        with running_server(command, host="127.0.0.1", port=port, startup_timeout=30):
            pass


def test_stop_escalates_to_sigterm_when_ctrl_c_is_ignored(capsys):
    script = (
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    program = start_program([sys.executable, "-c", script], own_group=True)
    time.sleep(1.0)  # let it install its handler
    assert program.stop(grace=0.5) == -signal.SIGTERM


def test_ctrl_c_reaches_the_child_s_own_children(tmp_path):
    # vLLM's server starts worker processes: stopping the server must stop them too.
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    program = start_program([sys.executable, "-c", script], own_group=True)
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    program.stop(grace=5)
    for _ in range(50):
        if subprocess.run(
            ["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True
        ).stdout.strip() in ("", "Z"):
            break
        time.sleep(0.1)
    assert subprocess.run(
        ["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True
    ).stdout.strip() in ("", "Z")


def test_dry_run_prints_the_command_and_starts_nothing(tiny_run, monkeypatch):
    from typer.testing import CliRunner

    from nerft.cli.main import app
    from nerft.inference.vllm_env import VllmEnvironment
    from nerft.serving import commands

    gpu = VllmEnvironment(
        python="/gpu/bin/python", in_process=False, found_by="test", distribution="vllm", vllm="0.11.0"
    )
    monkeypatch.setattr(commands, "find_vllm_environment", lambda: gpu)
    result = CliRunner().invoke(
        app, ["serve", str(tiny_run), "--engine", "vllm", "--port", "8011", "--api-key", "k", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"VLLM_API_KEY=*** /gpu/bin/python -m vllm.entrypoints.openai.api_server --model {load_run(tiny_run).base_model} "
        f"--host 127.0.0.1 --port 8011 --enable-lora --lora-modules tiny-lora={tiny_run} --max-lora-rank 8 --max-loras 1 "
        "--generation-config vllm --max-model-len 2048"
    ]
    assert refuses_connections(8011)


def test_dry_run_of_two_runs_serves_both_adapters_on_their_base(tiny_run, other_tiny_run, monkeypatch):
    from typer.testing import CliRunner

    from nerft.cli.main import app
    from nerft.inference.vllm_env import VllmEnvironment
    from nerft.serving import commands

    gpu = VllmEnvironment(
        python="/gpu/bin/python", in_process=False, found_by="test", distribution="vllm", vllm="0.11.0"
    )
    monkeypatch.setattr(commands, "find_vllm_environment", lambda: gpu)
    result = CliRunner().invoke(
        app, ["serve", str(tiny_run), str(other_tiny_run), "--engine", "vllm", "--port", "8011", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"/gpu/bin/python -m vllm.entrypoints.openai.api_server --model {load_run(tiny_run).base_model} "
        f"--host 127.0.0.1 --port 8011 --enable-lora --lora-modules tiny-lora={tiny_run} "
        f"tiny-lora-b={other_tiny_run} --max-lora-rank 16 --max-loras 2 --generation-config vllm --max-model-len 2048"
    ]


def variant_of(run_dir, folder, **changes):
    """A copy of the run in `folder` with some of run.json's values changed."""
    from dataclasses import replace

    from nerft.runfolder import write_run

    shutil.copytree(run_dir, folder)
    write_run(replace(load_run(folder), adapter_dir=folder, **changes))
    return folder


@pytest.mark.parametrize(
    ("changes", "difference"),
    [
        ({"base_model": "Qwen/Qwen2.5-7B-Instruct"}, "their base models differ ({base} vs Qwen/Qwen2.5-7B-Instruct)"),
        ({"template": "llama3"}, "their chat templates differ (qwen vs llama3)"),
        ({"prompt": "seed"}, "their prompt formats differ (compact vs seed)"),
        ({"labels": ["name", "company"]}, "their labels differ ({labels} vs name,company)"),
    ],
)
def test_runs_that_cannot_share_a_server_are_refused_naming_both_and_the_difference(
    tiny_run, other_tiny_run, tmp_path, changes, difference
):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    variant = variant_of(other_tiny_run, tmp_path / "variant", **changes)
    run = load_run(tiny_run)
    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(variant), "--engine", "vllm", "--dry-run"])
    difference = difference.format(base=Path(run.base_model).resolve(), labels=",".join(run.labels))
    assert (result.exit_code, result.stderr.strip()) == (
        1,
        f"nerft: error: runs {tiny_run} and {variant} cannot share one server: {difference}",
    )


def test_runs_with_different_saved_chat_templates_are_refused(tiny_run, other_tiny_run, tmp_path):
    from nerft.errors import ConfigError
    from nerft.serving.commands import check_servable_together

    one = variant_of(tiny_run, tmp_path / "one")
    other = variant_of(other_tiny_run, tmp_path / "other")
    (one / "chat_template.jinja").write_text("{{ messages }}")
    check_servable_together([load_run(one), load_run(other)])  # one saved its template, the other did not: alike
    (other / "chat_template.jinja").write_text("{{ messages | tojson }}")
    with pytest.raises(ConfigError) as info:
        check_servable_together([load_run(one), load_run(other)])
    assert str(info.value) == (
        f"runs {one} and {other} cannot share one server: the chat templates saved with them (chat_template.jinja) differ"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--engine", "llamafactory"],
            "LLaMA-Factory's API server serves one adapter (its issue 5172): serve several runs with --engine vllm",
        ),
        (
            ["--engine", "vllm", "--model-name", "ner"],
            "--model-name names the model of one run; several runs are served under their folders' names",
        ),
    ],
)
def test_two_runs_are_refused_by_llamafactory_and_with_one_model_name(tiny_run, other_tiny_run, option, message):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(other_tiny_run), *option, "--dry-run"])
    assert (result.exit_code, result.stderr.strip()) == (1, f"nerft: error: {message}")


def test_two_runs_of_one_folder_name_are_refused(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    twin = variant_of(tiny_run, tmp_path / "elsewhere" / tiny_run.name)
    result = CliRunner().invoke(app, ["serve", str(tiny_run), str(twin), "--engine", "vllm", "--dry-run"])
    assert (result.exit_code, result.stderr.strip()) == (
        1,
        f"nerft: error: runs {tiny_run} and {twin} would both be served as 'tiny-lora' "
        "(give one of the folders another name)",
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--backend", "vllm"], "--backend chooses LLaMA-Factory's backend; it does not apply to --engine vllm"),
        (["--log-requests"], "--log-requests is LLaMA-Factory's option; it does not apply to --engine vllm"),
    ],
)
def test_llamafactory_options_are_refused_with_the_vllm_server(tiny_run, option, message):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    result = CliRunner().invoke(app, ["serve", str(tiny_run), "--engine", "vllm", *option, "--dry-run"])
    assert (result.exit_code, result.stderr.strip()) == (1, f"nerft: error: {message}")


def ctrl_c_after(seconds: float) -> None:
    import os
    import threading

    threading.Timer(seconds, os.kill, args=(os.getpid(), signal.SIGINT)).start()


def serve_fake(port, on_ready, **env):
    from nerft.serving import server as serving

    logged: list[str] = []
    code = serving.serve(
        fake_command(port, **env), host="127.0.0.1", port=port, on_ready=on_ready, log=logged.append, startup_timeout=30
    )
    return code, logged


def test_ctrl_c_once_serving_stops_the_server_and_exits_0():
    port = free_port()
    servers = []

    def ready(server):
        servers.append(server)
        ctrl_c_after(0.2)

    code, logged = serve_fake(port, ready)
    assert code == 0
    assert logged[-1] == "server stopped (exit code 0)"  # the fake server caught Ctrl-C and exited cleanly
    assert servers[0].program.poll() == 0 and refuses_connections(port)


def test_ctrl_c_while_starting_stops_the_child_and_exits_130():
    port = free_port()
    ctrl_c_after(1.0)
    code, logged = serve_fake(port, lambda server: pytest.fail("never ready"), DELAY="30")
    assert (code, logged[-1]) == (130, "stopped before the server was ready")


def test_a_server_that_exits_by_itself_is_an_error():
    port = free_port()

    def ready(server):
        server.program.signal(signal.SIGTERM)  # the server dies under the user

    with pytest.raises(ServerError, match="the server exited with code -15"):
        serve_fake(port, ready)


# --- odd option values and a public server -------------------------------------------------------


def invoke(*args):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    return CliRunner().invoke(app, [str(arg) for arg in args])


@pytest.mark.parametrize(
    "endpoint, reason",
    [
        ("http://[::1", "not a valid URL (Invalid IPv6 URL;"),
        ("http://127.0.0.1:abc/v1", "not a valid URL (Port could not be cast to integer value as 'abc';"),
        ("http://127.0.0.1:99999/v1", "not a valid URL (Port out of range 0-65535;"),
        ("ftp://127.0.0.1/v1", "not an http(s) URL"),
        ("http://", "not an http(s) URL"),
    ],
)
def test_an_endpoint_that_is_no_url_is_one_line(endpoint, reason):
    result = invoke("predict", "--endpoint", endpoint, "--text", "张三")
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [result.stderr.splitlines()[-1]]
    assert result.stderr.startswith(f"nerft: error: {endpoint}: {reason}")


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_outside_0_to_65535(port):
    result = invoke("serve", "run", "--port", port)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Invalid value for '--port'" in result.stderr


def test_a_server_other_machines_reach_needs_a_key_or_insecure(tiny_run):
    result = invoke("serve", tiny_run, "--host", "0.0.0.0", "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "nerft: error: --host 0.0.0.0 lets other machines use the server, and there is no --api-key "
        "(give --api-key KEY (clients send it as a bearer token), or --insecure to serve without one)"
    ]
    result = invoke("serve", tiny_run, "--host", "0.0.0.0", "--insecure", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0 without --api-key (--insecure)" in result.stderr
    for allowed in (["--host", "0.0.0.0", "--api-key", "k"], ["--host", "::1"], []):
        assert invoke("serve", tiny_run, *allowed, "--dry-run").exit_code == 0


def test_a_server_on_every_interface_tells_where_others_reach_it():
    from nerft.serving.server import listening_note

    assert listening_note("127.0.0.1", 8000) is None
    assert listening_note("0.0.0.0", 8000) == (
        f"listening on every interface (0.0.0.0:8000): from other machines http://{socket.gethostname()}:8000/v1"
    )


def test_the_server_dies_with_nerft_even_by_sigkill(tmp_path):
    # nerft serve killed with SIGKILL cannot stop its child: the kernel does (PR_SET_PDEATHSIG).
    script = (
        "import sys, time; from nerft.process import start_program; "
        "p = start_program([sys.executable, '-c', 'import time; time.sleep(60)'], own_group=True, "
        "die_with_parent=True, log=lambda m: None); print(p.child.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(50):
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(child)], capture_output=True, text=True).stdout.strip()
        if state in ("", "Z"):
            break
        time.sleep(0.1)
    assert state in ("", "Z")


def test_demo_on_a_taken_port_is_one_line_before_any_model_loads(tiny_run, monkeypatch):
    from nerft.inference import predict

    monkeypatch.setattr(predict, "open_engine", lambda *a, **k: pytest.fail("the model was loaded"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("demo", tiny_run, "--port", port)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1].startswith(f"nerft: error: cannot listen on 127.0.0.1:{port}: ")
