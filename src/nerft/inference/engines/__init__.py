"""Engines that answer chat requests: `hf` (transformers), `vllm` (offline vLLM), `openai` (HTTP).

Every engine takes `ChatRequest`s and yields one `Generation` per request, in request order, as
soon as it is known, so predictions can be written while the rest are still being generated.
Decoding is greedy everywhere and stops at the template's end token or at the request's
`max_new_tokens`. Heavy libraries are imported inside the engine that needs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
    """A model's answer: the decoded text (special tokens removed), why it ended, and, where the
    engine reports them, its tokens as (bytes, log-probability) pairs, the end token as b""."""

    text: str
    finish_reason: str  # "stop" (end token) or "length" (hit max_new_tokens)
    tokens: tuple[tuple[bytes, float], ...] | None = field(default=None, compare=False)  # not the answer itself


def whole_characters(generation: Generation) -> Generation:
    """The answer without the part of a character it ends in. A token can hold part of a UTF-8
    character (byte-level BPE), so an answer cut at `max_new_tokens` can end inside one: decoded, it
    ends in U+FFFD, which is in no sentence. That end is dropped from the text and its tokens (a
    token cut in two keeps its log-probability: the model did write it)."""
    if generation.finish_reason != "length" or not generation.text.endswith("\ufffd"):
        return generation
    text = generation.text.rstrip("\ufffd")
    tokens = generation.tokens
    if tokens is not None:
        whole = text.encode()
        trimmed, at = [], 0
        for piece, logprob in tokens:
            if at >= len(whole):
                break
            trimmed.append((piece[: len(whole) - at], logprob))
            at += len(piece)
        tokens = tuple(trimmed) if b"".join(piece for piece, _ in trimmed) == whole else None
    return Generation(text, generation.finish_reason, tokens)


class Engine(Protocol):
    name: str

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        """One generation per request, in request order."""

    def describe(self) -> dict:
        """What answers (engine, model, adapter): recorded beside resumable predictions."""

    def close(self) -> None:
        """Free what the engine holds (GPU memory, HTTP connections)."""


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
