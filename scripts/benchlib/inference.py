"""Sequential vs batched generation through one engine: same loaded model, same requests, one run.

Every nerft engine (`nerft.inference.engines`) answers its requests in batches of its
`batch_size`; sequential is `batch_size = 1`, one request at a time, the way the tutorials scored
their dev set. Switching the attribute on one engine keeps the model, the weights and the
requests identical, so the ratio measures batching alone. Greedy decoding must give the same
answers either way: the comparison counts the ones that differ.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationRun:
    batch_size: int
    requests: int
    seconds: float
    texts: list[str]
    finish_reasons: list[str]
    forward_passes: int | None = None  # calls of the model's forward (a transformers model only)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "predictions_per_second": round(self.per_second, 3),
            "stopped": self.finish_reasons.count("stop"),
            "hit_length_limit": self.finish_reasons.count("length"),
            "forward_passes_per_answer": round(self.forward_passes / self.requests, 2)
            if self.forward_passes is not None and self.requests
            else None,
        }


def timed_generation(engine, requests: Sequence, batch_size: int) -> GenerationRun:
    """Answer every request with the engine set to `batch_size`, and time it."""
    engine.batch_size = batch_size
    with counted_forward_passes(engine) as passes:
        start = time.perf_counter()
        generations = list(engine.generate(requests))
        seconds = time.perf_counter() - start
    if len(generations) != len(requests):
        raise RuntimeError(f"{type(engine).__name__} answered {len(generations)} of {len(requests)} requests")
    return GenerationRun(
        batch_size,
        len(requests),
        seconds,
        [g.text for g in generations],
        [g.finish_reason for g in generations],
        passes[0] if passes else None,
    )


@contextlib.contextmanager
def counted_forward_passes(engine) -> Iterator[list[int]]:
    """`[calls]` of the engine's transformers model's forward while the block runs (the hf engine:
    one per generated token, fewer where prompt lookup's guesses are accepted); `[]` for an engine
    whose model runs elsewhere (vLLM's worker, Ray's actors)."""
    model = getattr(engine, "model", None)
    if not hasattr(model, "register_forward_hook"):
        yield []
        return
    calls = [0]

    def count(*_):
        calls[0] += 1

    handle = model.register_forward_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def compare_batching(engine, requests: Sequence, *, batch_sizes: Sequence[int], warmup: int = 2) -> dict:
    """Time the same requests one at a time, then in batches of each of `batch_sizes`, on one engine.

    A few warm-up requests run first in every mode, so none pays for one-off start-up work
    (kernel selection, caches, lazy initialisation). Each batched run is compared with the
    sequential one: its speedup, and how many answers are identical.
    """
    if warmup:
        for size in (1, *batch_sizes):
            timed_generation(engine, requests[:warmup], size)
    sequential = timed_generation(engine, requests, 1)
    batched = []
    for size in batch_sizes:
        run = timed_generation(engine, requests, size)
        differing = [
            {"index": i, "sequential": a, "batched": b}
            for i, (a, b) in enumerate(zip(sequential.texts, run.texts))
            if a != b
        ]
        batched.append(
            {
                **run.to_dict(),
                "speedup": round(run.per_second / sequential.per_second, 3) if sequential.per_second else None,
                "identical": len(requests) - len(differing),
                "differing": differing[:3],
            }
        )
    return {"requests": len(requests), "sequential": sequential.to_dict(), "batched": batched}


def compare_engines(open_engines: Sequence[tuple[str, int, object]], requests: Sequence, *, warmup: int = 2) -> dict:
    """Time the same requests through several engines on one model, one engine loaded at a time.

    `open_engines`: (name, batch size, a function that loads the engine). Each engine is loaded,
    warmed up on `warmup` requests, timed on all of them at its batch size, and closed before
    the next loads (a vLLM engine and a transformers model would otherwise share the CPU's memory).
    Loading is timed apart. The first engine is the reference: the others' ratio of predictions
    per second to it, and how many of their answers are identical to its answers.
    """
    runs = []
    for name, batch_size, open_engine in open_engines:
        start = time.perf_counter()
        engine = open_engine()
        load_seconds = time.perf_counter() - start
        try:
            if warmup:
                timed_generation(engine, requests[:warmup], batch_size)
            runs.append((name, load_seconds, timed_generation(engine, requests, batch_size)))
        finally:
            engine.close()
    _, _, reference = runs[0]
    results = []
    for name, load_seconds, run in runs:
        differing = [
            {"index": i, "reference": a, "answer": b}
            for i, (a, b) in enumerate(zip(reference.texts, run.texts))
            if a != b
        ]
        results.append(
            {
                "engine": name,
                "load_seconds": round(load_seconds, 1),
                **run.to_dict(),
                "ratio": round(run.per_second / reference.per_second, 3) if reference.per_second else None,
                "identical": len(requests) - len(differing),
                "differing": differing[:3],
            }
        )
    return {"requests": len(requests), "engines": results}
