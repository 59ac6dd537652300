"""`nerft serve`: an OpenAI-compatible server for a trained run (base model + adapter), or for
several LoRA runs of one base model behind one vLLM server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nerft.cli.common import log
from nerft.cli.options import JsonOutput, ServerBackend, ServerName, choice

NAME = "serve"


def command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Training run folders (made by `nerft train`). Several (--engine vllm): LoRA runs of one base model, each served under its folder's name.",
            show_default=False,
        ),
    ],
    engine: Annotated[
        ServerName,
        typer.Option(
            "--engine",
            help="llamafactory (`llamafactory-cli api`) or vllm (vLLM's OpenAI server; on a CPU from .venv-vllm).",
        ),
    ] = ServerName.llamafactory,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on; 0.0.0.0 exposes the server to the network (needs --api-key, or --insecure).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = 8000,
    api_key: Annotated[
        Optional[str], typer.Option("--api-key", envvar="NERFT_API_KEY", help="Require this bearer token from clients.")
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve on a --host other than this machine's loopback without --api-key: anyone can use it.",
        ),
    ] = False,
    model_name: Annotated[
        Optional[str],
        typer.Option("--model-name", help="Model name clients ask for (default: the run folder's name); one run only."),
    ] = None,
    backend: Annotated[
        ServerBackend, typer.Option("--backend", help="LLaMA-Factory's inference backend.")
    ] = ServerBackend.huggingface,
    startup_timeout: Annotated[
        float, typer.Option("--startup-timeout", help="Seconds to wait for the server to answer.")
    ] = 900.0,
    log_requests: Annotated[bool, typer.Option("--log-requests", help="Let LLaMA-Factory log every request.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the server's command line (and LLaMA-Factory's YAML) and start nothing."),
    ] = False,
    json_output: JsonOutput = False,
) -> None:
    """Serve trained runs over an OpenAI-compatible API until Ctrl-C; clients pick a run with --model NAME."""
    from nerft.serving.server import check_exposure, free_port, listening_note, serve, server_command

    check_exposure(host, api_key, insecure=insecure, warn=log)
    if not dry_run:
        port = port or free_port(host)
    command = server_command(
        run_dirs,
        engine=choice(engine),
        host=host,
        port=port,
        api_key=api_key,
        model_name=model_name,
        backend=choice(backend),
        log_requests=log_requests,
    )
    if dry_run:
        _print_command(command)
        return

    def ready(server) -> None:
        names = list(server.models)
        if json_output:
            named = {"model": names[0]} if len(names) == 1 else {}
            typer.echo(json.dumps({"url": server.url, **named, "models": names, "pid": server.program.child.pid}))
        else:
            typer.echo(f"serving {', '.join(names)} at {server.url}")
        note = listening_note(host, port)
        if note:
            log(note)
        pick = "" if len(names) == 1 else " --model NAME"
        log(f"score it: nerft eval --endpoint {server.url}{pick} --gold FILE ... ; stop it with Ctrl-C")

    code = serve(
        command, host=host, port=port, api_key=api_key, startup_timeout=startup_timeout, on_ready=ready, log=log
    )
    raise typer.Exit(code)


def _print_command(command) -> None:
    import yaml

    from nerft.process import format_command

    typer.echo(format_command(command.argv, command.env))
    if command.missing:
        typer.echo(f"# cannot start here: {command.missing} ({command.install_hint})")
    if command.config_file is not None:
        typer.echo(f"# {command.config_file} (written when the server starts)")
        typer.echo(yaml.safe_dump(command.config, sort_keys=False, allow_unicode=True).rstrip())
