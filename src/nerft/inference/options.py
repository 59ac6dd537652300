"""`EngineOptions`: how to answer, as one typed value.

`nerft predict`, `nerft eval` and `nerft demo` build it once from their options
(`nerft.cli.options.engine_options`); `open_engine(options, run)` opens the engine it names, the
Ray actors open theirs from the same value. `check` holds every rule about which options go
together, so each mistake is refused in one place, before any model loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nerft.errors import ConfigError, ModelError
from nerft.inference.source import resolve_model
from nerft.models.shapes import resolve_model_shape
from nerft.prompts import PromptFormat, get_format

if TYPE_CHECKING:
    from nerft.runfolder import RunInfo

ENGINE_NAMES = ("hf", "vllm", "openai")
DEFAULT_RETRIES = 4
DEFAULT_TIMEOUT = 120.0


# vLLM on a CPU (.venv-vllm) is the faster engine for a real model and enough sentences: on the
# 135M-parameter SmolLM2 it answers 5-6x faster than hf with identical answers (docs/PERFORMANCE.md,
# section 8), and its start-up (about 15 s) pays for itself after a few dozen sentences. A tiny
# model, or a few sentences, answer sooner with hf, which starts in seconds.
VLLM_CPU_MIN_PARAMETERS = 50_000_000
VLLM_CPU_MIN_SENTENCES = 64


def choose_engine(
    *, endpoint: bool, cuda_vllm: bool, cpu_vllm: bool, parameters: int | None, sentences: int | None
) -> str:
    """The default engine from the facts `default_engine` gathers (a pure rule, tested alone)."""
    if endpoint:
        return "openai"
    if cuda_vllm:
        return "vllm"
    large = parameters is not None and parameters >= VLLM_CPU_MIN_PARAMETERS
    many = sentences is None or sentences >= VLLM_CPU_MIN_SENTENCES
    return "vllm" if cpu_vllm and large and many else "hf"


def default_engine(*, endpoint: str | None, run: RunInfo | None = None, sentences: int | None = None) -> str:
    """`openai` when an endpoint is given; else `vllm` on a CUDA machine that has it, or on a CPU
    with a vLLM environment for a run of a real model and at least `VLLM_CPU_MIN_SENTENCES`
    sentences (`sentences` None: a stream of unknown length); else `hf`."""
    if endpoint:
        return "openai"
    cuda_vllm = cpu_vllm = False
    if importlib.util.find_spec("vllm") is not None:
        import torch

        cuda_vllm = torch.cuda.is_available()
    parameters = None
    if not cuda_vllm and run is not None:
        parameters = run_parameters(run)
        if parameters is not None and parameters >= VLLM_CPU_MIN_PARAMETERS:
            # here, not at the top: vllm_env imports the engines package, which `nerft --help` must not
            from nerft.inference.vllm_env import find_vllm_environment

            found = find_vllm_environment()
            cpu_vllm = found is not None and found.vllm is not None and found.cpu
    return choose_engine(
        endpoint=False, cuda_vllm=cuda_vllm, cpu_vllm=cpu_vllm, parameters=parameters, sentences=sentences
    )


def run_parameters(run: RunInfo) -> int | None:
    """The parameter count of a run's model, from its config.json (None when unknown)."""
    try:
        shape = resolve_model_shape(resolve_model(run).model)
    except ModelError:
        return None
    return shape.params() if shape is not None else None


@dataclass(frozen=True)
class EngineOptions:
    """The engine and its settings (None: the engine's own default)."""

    engine: str | None = None  # hf, vllm or openai; None: `default_engine`
    endpoint: str | None = None  # an OpenAI-compatible server's base URL
    prompt: str | None = None  # the prompt format of an endpoint without a run (a run uses its own)
    model: str | None = None  # the model name on the endpoint
    api_key: str | None = None
    batch_size: int | None = None
    concurrency: int | None = None  # openai: requests in flight
    structured: bool | None = None  # vllm: on; openai: off (vLLM's structured_outputs field)
    grounded: bool | None = None  # entities from the sentence (hf, vllm: on; openai: on for a vLLM server)
    speculation: bool | None = None  # prompt-lookup decoding; None: on with batch size 1
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    backoff: float = 0.5
    ray: str | None = None  # a cluster's address, auto, local, or `default`: Ray's own choice
    ray_actors: int | None = None
    ray_cpus: float | None = None

    @property
    def engine_name(self) -> str:
        """The engine to open: the one asked for, else `openai` for an endpoint, else vllm or hf."""
        if self.engine is not None:
            return self.engine
        return default_engine(endpoint=self.endpoint)

    def local(self) -> EngineOptions:
        """The options of the engine each Ray actor runs in its own process."""
        return replace(self, ray=None, ray_actors=None, ray_cpus=None)

    def prompt_format(self, run: RunInfo | None) -> PromptFormat:
        """The run's prompt format (what training saw), else `prompt` (default compact)."""
        return run.prompt_format() if run is not None else get_format(self.prompt or "compact")

    def check(self, run: RunInfo | None) -> None:
        """A `ConfigError` for options that do not go together, or with `run` (None: an endpoint alone)."""
        if run is not None and self.prompt is not None and self.prompt != run.prompt:
            raise ConfigError(
                f"--prompt {self.prompt} differs from the run's prompt format ({run.prompt}); inference must use training's"
            )
        name = self.engine or ("openai" if self.endpoint else None)
        if self.ray is not None:
            if name == "openai":
                raise ConfigError(
                    "--ray runs the hf or vllm engine on a cluster; an endpoint has its own --concurrency"
                )
            if run is None:
                raise ConfigError("--ray needs --run RUN_DIR (the model every actor loads)")
        elif self.ray_actors is not None or self.ray_cpus is not None:
            raise ConfigError("--ray-actors and --ray-cpus are for --ray")
        if name is not None and name not in ENGINE_NAMES:
            raise ConfigError(f"unknown engine {name!r} (choose from: {', '.join(ENGINE_NAMES)})")
        if name == "openai":
            if not self.endpoint:
                raise ConfigError("--engine openai needs --endpoint URL (a server started with `nerft serve`)")
            return
        engine = self.engine_name
        if run is None:
            raise ConfigError(f"--engine {engine} needs --run RUN_DIR (the model to load)")
        if self.endpoint:
            raise ConfigError(f"--endpoint is for --engine openai, not {engine}")
        if engine == "hf" and self.speculation and (self.batch_size or 0) != 1:
            raise ConfigError(
                "--speculation with --engine hf needs --batch-size 1: transformers runs prompt lookup one sentence at a time"
            )
