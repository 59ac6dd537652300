"""Options shared by several commands, defined once.

The engine options are `nerft predict`'s and `nerft eval`'s alike (eval predicts the gold sentences
first when given --run/--endpoint), and `nerft demo` takes some of them: `engine_options` adds
them to a command, which receives them as one `EngineOptions`. Choices are Enums so that `--help`
and a wrong value list them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nerft.inference.options import DEFAULT_RETRIES, DEFAULT_TIMEOUT, EngineOptions


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


MinConfidence = Annotated[
    Optional[float],
    typer.Option(
        "--min-confidence",
        min=0.0,
        max=1.0,
        help="Leave out entities whose confidence is below this (0-1); entities without one (an engine that reports no log-probabilities) stay.",
    ),
]
Restart = Annotated[
    bool,
    typer.Option(
        "--restart",
        help="Delete the predictions an earlier, unfinished run left (OUT.partial) and predict everything again.",
    ),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
OptionalRunDir = Annotated[Optional[Path], typer.Option("--run", help="A training run folder (made by `nerft train`).")]
Engine = Annotated[
    Optional[EngineName],
    typer.Option(
        "--engine",
        help="hf (transformers), vllm (GPU; on a CPU from .venv-vllm, on the adapter merged into a cached copy) or openai (any OpenAI-compatible endpoint). Default: openai with --endpoint; else vllm where it is faster (a GPU with vLLM; on a CPU with .venv-vllm, a model of 50M+ parameters and 64+ sentences); else hf.",
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
Grounded = Annotated[
    Optional[bool],
    typer.Option(
        "--grounded/--no-grounded",
        help="Grounded decoding: the model can only write the run's labels and entities that are substrings of their sentence, each (label, entity) once (hf, vllm: on; openai: on for a vLLM server, whose structured_outputs it uses).",
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
        help="Predict --data/--gold on a Ray cluster through Ray Data: read there, answered by a pool of actors each running the engine, written here in input order. Bare --ray: Ray's own choice ($RAY_ADDRESS, else the cluster `ray start` began on this machine, else a new one here); or a cluster's HOST:PORT, auto (a running cluster, else an error), local (a new cluster of this machine only). Needs the ray extra.",
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


ENGINE_OPTIONS: dict[str, tuple[Any, Any]] = {  # EngineOptions field: (its option, default)
    "engine": (Engine, None),
    "endpoint": (Endpoint, None),
    "prompt": (Prompt, None),
    "model": (Model, None),
    "api_key": (ApiKey, None),
    "batch_size": (BatchSize, None),
    "concurrency": (Concurrency, None),
    "structured": (Structured, None),
    "grounded": (Grounded, None),
    "speculation": (Speculation, None),
    "ray": (Ray, None),
    "ray_actors": (RayActors, None),
    "ray_cpus": (RayCpus, None),
    "retries": (Retries, DEFAULT_RETRIES),
    "timeout": (Timeout, DEFAULT_TIMEOUT),
}
DEMO_OPTIONS = ("engine", "endpoint", "model", "api_key", "structured", "grounded")


def engine_options(names: tuple[str, ...] = tuple(ENGINE_OPTIONS)) -> Callable[[Callable], Callable]:
    """Give a command the engine options `names` (all by default), after its own; the command
    takes them as one keyword argument, `options: EngineOptions`, built and typed here."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [parameter for name, parameter in signature.parameters.items() if name != "options"]
        added = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=ENGINE_OPTIONS[name][0],
                default=ENGINE_OPTIONS[name][1],
            )
            for name in names
        ]

        @functools.wraps(command)
        def with_options(**values):
            chosen = {name: choice(values.pop(name)) for name in names}
            return command(**values, options=EngineOptions(**chosen))

        with_options.__signature__ = signature.replace(
            parameters=[parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own] + added
        )
        return with_options

    return decorate


def choice(value: Any) -> Any:
    """An Enum option's plain value (what the library functions take); other values as they are."""
    return value.value if isinstance(value, Enum) else value
