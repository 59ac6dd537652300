"""Engines that answer chat requests: `hf` (transformers), `vllm` (offline vLLM), `openai` (HTTP).

Every engine takes `ChatRequest`s and yields one `Generation` per request, in request order, as
soon as it is known, so predictions can be written while the rest are still being generated.
Decoding is greedy everywhere and stops at the template's end token or at the request's
`max_new_tokens`. Heavy libraries are imported inside the engine that needs them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from nerft.prompts import PromptFormat

ENGINES = ("hf", "vllm", "openai")


@dataclass(frozen=True)
class ChatRequest:
    """One sentence to answer: its system prompt and user turn, and a bound on the answer."""

    text: str
    system: str
    user: str
    max_new_tokens: int

    @classmethod
    def for_text(cls, fmt: PromptFormat, text: str) -> ChatRequest:
        """The run's system prompt and user turn for one sentence."""
        return cls(text=text, system=fmt.system, user=fmt.user_message(text), max_new_tokens=fmt.max_new_tokens(text))

    @property
    def messages(self) -> list[dict[str, str]]:
        """The OpenAI-style messages: the system prompt, then the user turn."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


@dataclass(frozen=True)
class Generation:
    """A model's answer: the decoded text (special tokens removed) and why it ended."""

    text: str
    finish_reason: str  # "stop" (end token) or "length" (hit max_new_tokens)


class Engine(Protocol):
    name: str

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        """One generation per request, in request order."""

    def describe(self) -> dict:
        """What answers (engine, model, adapter): recorded beside resumable predictions."""

    def close(self) -> None:
        """Free what the engine holds (GPU memory, HTTP connections)."""


# vLLM on a CPU (.venv-vllm) is the faster engine for a real model and enough sentences: on the
# 135M-parameter SmolLM2 it answers 3.6x faster than hf (docs/PERFORMANCE.md, scoring speed), and
# its start-up (about 25 s) pays for itself after a few dozen sentences. A tiny model, or a few
# sentences, answer sooner with hf, which starts in seconds.
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


def default_engine(*, endpoint: str | None, run=None, sentences: int | None = None) -> str:
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
            from nerft.inference.vllm_env import find_vllm_environment

            found = find_vllm_environment()
            cpu_vllm = found is not None and found.vllm is not None and found.cpu
    return choose_engine(
        endpoint=False, cuda_vllm=cuda_vllm, cpu_vllm=cpu_vllm, parameters=parameters, sentences=sentences
    )


def run_parameters(run) -> int | None:
    """The parameter count of a run's model, from its config.json (None when unknown)."""
    from nerft.doctor.memory import resolve_model_shape
    from nerft.errors import ModelError
    from nerft.inference.source import resolve_model

    try:
        shape = resolve_model_shape(resolve_model(run).model)
    except ModelError:
        return None
    return shape.params() if shape is not None else None


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
