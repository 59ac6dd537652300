"""`nerft download`: fetch a base model from ModelScope into nerft's model cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nerft.cli.common import log

NAME = "download"


def command(
    model_id: Annotated[str, typer.Argument(help="A ModelScope model id, e.g. Qwen/Qwen2.5-7B-Instruct.")],
    local_dir: Annotated[
        Path | None,
        typer.Option("--local-dir", help="Download here instead of nerft's cache ($NERFT_CACHE/models/MODEL_ID)."),
    ] = None,
    revision: Annotated[str, typer.Option("--revision", help="Branch, tag or commit on ModelScope.")] = "master",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for ModelScope to answer before giving up.")
    ] = 10.0,
) -> None:
    """Download a base model from ModelScope (configs then name it by its id); prints the local folder."""
    from nerft.models.download import download_model, model_cache_path

    target = local_dir or model_cache_path(model_id)
    log(f"downloading {model_id} ({revision}) from ModelScope into {target}")
    path = download_model(model_id, revision=revision, timeout=timeout, local_dir=local_dir)
    typer.echo(str(path))
