"""`nerft demo`: try a run in the browser (a gradio page on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nerft.cli.common import log
from nerft.cli.options import ApiKey, Endpoint, Engine, Model, Structured, choice

NAME = "demo"


def command(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder (made by `nerft train`).")],
    engine: Engine = None,
    endpoint: Endpoint = None,
    model: Model = None,
    api_key: ApiKey = None,
    structured: Structured = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the page.")] = 7860,
) -> None:
    """Try a run in the browser: paste sentences, see the entities highlighted and the JSON (same engine and prompt as predict)."""
    from nerft.inference.engines import default_engine
    from nerft.inference.predict import open_engine
    from nerft.runfolder import load_run
    from nerft.serving.demo import build_demo

    run = load_run(run_dir)
    fmt = run.prompt_format()
    name = choice(engine) or default_engine(endpoint=endpoint)
    opened = open_engine(name, run=run, fmt=fmt, endpoint=endpoint, model=model, api_key=api_key, structured=structured)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(opened, fmt, title=f"nerft demo: {Path(run_dir).resolve().name}")
    try:
        demo.queue().launch(
            server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True, quiet=True
        )
        typer.echo(f"demo of {run_dir} at http://{host}:{port}/ (Ctrl-C stops it)")
        demo.block_thread()
    finally:
        demo.close()
        opened.close()
        log("demo stopped")
