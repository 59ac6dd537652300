"""`nerft export`: merge a run's LoRA adapter into its base model (`llamafactory-cli export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nerft.cli.common import fail, log

NAME = "export"


def command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by `nerft train`.")],
    out: Annotated[Path, typer.Option("--out", help="Where the merged model goes (a new folder).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing merged model at --out.")] = False,
    device: Annotated[
        str, typer.Option("--device", help="cpu (needs RAM for the whole model, ~16 GB for 7B in bf16) or auto (GPU).")
    ] = "cpu",
) -> None:
    """Merge the LoRA adapter of a run into its base model: a standalone model folder for transformers or vLLM."""
    from nerft.errors import ConfigError
    from nerft.training.export import export_run

    if device not in ("cpu", "auto"):
        raise ConfigError(f"--device must be cpu or auto, got {device!r}")
    code, merged = export_run(run_dir, out, force=force, device=device, log=log)
    if code != 0:
        fail(
            f"llamafactory-cli export exited with code {code} (its log is above); nothing was written to {merged}", code
        )
    typer.echo(str(merged))
