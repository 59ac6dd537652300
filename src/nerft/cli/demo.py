"""`nerft demo`: try a run in the browser (a gradio page on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nerft.cli.common import log
from nerft.cli.options import DEMO_OPTIONS, engine_options
from nerft.inference.options import EngineOptions

NAME = "demo"


@engine_options(DEMO_OPTIONS)
def command(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder (made by `nerft train`).")],
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the page.")] = 7860,
    *,
    options: EngineOptions,
) -> None:
    """Try a run in the browser: paste sentences, see the entities highlighted and the JSON (same engine and prompt as predict)."""
    from nerft.errors import ServerError
    from nerft.inference.documents import piece_chars
    from nerft.inference.predict import open_engine
    from nerft.runfolder import load_run
    from nerft.serving.demo import build_demo
    from nerft.serving.server import check_port_free

    run = load_run(run_dir)
    check_port_free(host, port)  # before a model is loaded
    fmt = run.prompt_format()
    opened = open_engine(options, run)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(opened, fmt, title=f"nerft demo: {Path(run_dir).resolve().name}", max_chars=piece_chars(run))
    try:
        try:
            demo.queue().launch(
                server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True, quiet=True
            )
        except OSError as exc:  # taken since the check above; gradio says "Cannot find empty port"
            raise ServerError(f"cannot listen on {host}:{port}: {exc}", hint="choose another --port") from None
        typer.echo(f"demo of {run_dir} at http://{host}:{port}/ (Ctrl-C stops it)")
        demo.block_thread()
    finally:
        demo.close()
        opened.close()
        log("demo stopped")
