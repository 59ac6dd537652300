"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

JsonOutput = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OptionalRunDir = Annotated[Optional[Path], typer.Option("--run", help="A training run folder (made by `nerft train`).")]
Engine = Annotated[
    Optional[str], typer.Option("--engine", help="hf (transformers, CPU or GPU), vllm (GPU) or openai (any OpenAI-compatible endpoint).")
]
Endpoint = Annotated[Optional[str], typer.Option("--endpoint", help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")]
