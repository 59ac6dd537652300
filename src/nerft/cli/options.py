"""Options shared by several commands, defined once.

The engine options are `nerft predict`'s and `nerft eval`'s alike (eval predicts the gold sentences
first when given --run/--endpoint); choices are Enums so that `--help` and a wrong value list them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class EngineName(str, Enum):
    hf = "hf"
    vllm = "vllm"
    openai = "openai"


class PromptName(str, Enum):
    compact = "compact"
    seed = "seed"


class ServerName(str, Enum):
    """`nerft serve --engine`: the server program."""

    llamafactory = "llamafactory"
    vllm = "vllm"


class ServerBackend(str, Enum):
    """`nerft serve --backend`: LLaMA-Factory's inference backend."""

    huggingface = "huggingface"
    vllm = "vllm"
    sglang = "sglang"


JsonOutput = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OptionalRunDir = Annotated[Optional[Path], typer.Option("--run", help="A training run folder (made by `nerft train`).")]
Engine = Annotated[
    Optional[EngineName],
    typer.Option(
        "--engine",
        help="hf (transformers), vllm (GPU; on a CPU from .venv-vllm) or openai (any OpenAI-compatible endpoint).",
    ),
]
Endpoint = Annotated[
    Optional[str],
    typer.Option("--endpoint", help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."),
]
Prompt = Annotated[
    Optional[PromptName],
    typer.Option("--prompt", help="Prompt format for an endpoint without --run (default compact); a run uses its own."),
]
Model = Annotated[
    Optional[str], typer.Option("--model", help="Model name on the endpoint (default: the one it serves).")
]
ApiKey = Annotated[
    Optional[str], typer.Option("--api-key", envvar="NERFT_API_KEY", help="Bearer token for the endpoint.")
]
BatchSize = Annotated[
    Optional[int], typer.Option("--batch-size", min=1, help="Sentences per batch (hf: 8, vllm: 1024).")
]
Concurrency = Annotated[Optional[int], typer.Option("--concurrency", min=1, help="Requests in flight (openai: 8).")]
Structured = Annotated[
    Optional[bool],
    typer.Option(
        "--structured/--no-structured",
        help="Constrain decoding to the output format (vllm: on; openai: sends vLLM's structured_outputs).",
    ),
]
Speculation = Annotated[
    Optional[bool],
    typer.Option(
        "--speculation/--no-speculation",
        help="Prompt-lookup (n-gram) speculative decoding: the same greedy answers (default: on with --batch-size 1, where it is faster; vllm can run it in batches too, hf cannot).",
    ),
]
Ray = Annotated[
    Optional[str],
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Shard the sentences over Ray actors, each running the engine. Bare --ray: Ray's own choice ($RAY_ADDRESS, else the cluster `ray start` began on this machine, else a new one here); or a cluster's HOST:PORT, auto (a running cluster, else an error), local (a new cluster of this machine only). Needs the ray extra.",
    ),
]
RayActors = Annotated[
    Optional[int],
    typer.Option(
        "--ray-actors",
        min=1,
        help="With --ray: engine actors (default: one per GPU of the cluster; without GPUs, 2 CPU actors).",
    ),
]
RayCpus = Annotated[
    Optional[float],
    typer.Option("--ray-cpus", min=0.001, help="With --ray: CPUs per CPU actor, its torch threads (default 1)."),
]
Retries = Annotated[
    int, typer.Option("--retries", min=0, help="openai: retries of a failed request, with exponential backoff.")
]
Timeout = Annotated[float, typer.Option("--timeout", min=0.001, help="openai: seconds to wait for one answer.")]
DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 120.0


def choice(value: Enum | None) -> str | None:
    """An Enum option's plain value (what the library functions take)."""
    return None if value is None else value.value
