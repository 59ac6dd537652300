"""Scale-out on Ray: the sentences sharded over Ray actors, each running one of nerft's engines.

`RayEngine` is an `Engine` like the others, so `predict_records` streams, writes rows in input
order and resumes through it unchanged. It starts `options.ray_actors` actors on the Ray cluster at
`options.ray` (one per GPU of the cluster, or CPU actors of `options.ray_cpus` CPUs each), each
loading the run's weights with `open_local_engine(options.local(), run)` (hf, or vllm where installed): the answers are the single-process engine's.
Requests go out in shards of `shard_size` (default: a vllm batch, four hf batches), at most two in flight per actor; finished shards are
held until every shard before them is done, so rows come back in input order and what is held
stays bounded. A shard whose actor died (a killed process, a lost node) goes to a fresh actor
that replaces it, up to `attempts` times; an error the engine itself raised (a bad model) is not
retried.

The run folder must be at the same path on every node (a shared file system), and nerft
installed in the same environment there. On a GPU cluster vLLM's own data parallelism
(`vllm serve --data-parallel-size N`) balances requests across GPUs inside one engine and is the
better choice for one multi-GPU machine; this path is for many machines with one engine each.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nerft.errors import ConfigError, ServerError
from nerft.inference import RAY_DEFAULT
from nerft.inference.engines import ChatRequest, Generation, batched, hf, vllm
from nerft.inference.engines.local import open_local_engine
from nerft.inference.options import EngineOptions
from nerft.runfolder import load_run

if TYPE_CHECKING:
    from nerft.inference.engines import Engine

DEFAULT_CPU_ACTORS = 2
HF_SHARD_BATCHES = 4
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: an actor never waits for the driver


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EngineActor:
    """One engine inside a Ray worker process (made a Ray actor class by `RayEngine`)."""

    def __init__(self, options: EngineOptions, run_dir: str, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.engine: Engine = open_local_engine(options, load_run(run_dir))

    def describe(self) -> dict:
        return self.engine.describe()

    def pid(self) -> int:
        return os.getpid()

    def generate(self, shard: list[ChatRequest]) -> list[Generation]:
        return list(self.engine.generate(shard))


class RayEngine:
    name = "ray"

    def __init__(
        self,
        options: EngineOptions,
        run_dir: str | Path,
        *,
        shard_size: int | None = None,
        attempts: int = 3,
    ):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray, which is not installed", hint="pip install 'nerft[ray]'") from None
        engine, address = options.engine_name, options.ray or RAY_DEFAULT
        actors, cpus_per_actor = options.ray_actors, options.ray_cpus
        self.ray = ray
        try:
            ray.init(address=None if address == RAY_DEFAULT else address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise ServerError(
                f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}",
                hint="start it with `ray start --head`",
            ) from None
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.inner, self.shard_size, self.attempts = (
            engine,
            shard_size or self._default_shard(engine, options.batch_size),
            attempts,
        )
        if gpus:
            self.resources = {"num_gpus": 1, "num_cpus": cpus_per_actor or 1}
            count, threads = actors or gpus, None
        else:
            self.resources = {"num_cpus": cpus_per_actor or 1}
            count, threads = actors or DEFAULT_CPU_ACTORS, math.ceil(cpus_per_actor or 1)
        self._arguments = (options.local(), str(run_dir), threads)
        self.actors = [self._start_actor() for _ in range(count)]
        self.retried = 0  # shards sent again because their actor died
        where = f"{gpus} GPUs" if gpus else f"{self.resources['num_cpus']:g} CPU each"
        cluster = ray.get_runtime_context().gcs_address if address == RAY_DEFAULT else address
        log(f"ray: {count} {engine} actors on {cluster} ({where})")
        self._description = self._get(self.actors[0].describe.remote())

    @staticmethod
    def _default_shard(engine: str, batch_size: int | None) -> int:
        """vllm: one of its batches (it schedules a whole batch at once); hf: `HF_SHARD_BATCHES` of
        its batches, enough to sort by length, few enough that a small input still spreads."""
        if engine == "vllm":
            return batch_size or vllm.DEFAULT_BATCH_SIZE
        return (batch_size or hf.DEFAULT_BATCH_SIZE) * HF_SHARD_BATCHES

    def _start_actor(self):
        remote = self.ray.remote(**self.resources)(EngineActor)
        return remote.remote(*self._arguments)

    def _get(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            raise exc.cause if exc.cause is not None else exc from None

    def describe(self) -> dict:
        return self._description  # the engine's own: a Ray run resumes a single-process one

    def generate(self, requests: Iterable[ChatRequest]) -> Iterator[Generation]:
        ray = self.ray
        shards = enumerate(batched(requests, self.shard_size))
        in_flight: dict = {}  # object ref -> (shard index, shard, actor slot, attempt, actor)
        finished: dict[int, list[Generation]] = {}
        submitted = yielded = 0
        limit = IN_FLIGHT_PER_ACTOR * len(self.actors)

        def submit(index: int, shard: list, attempt: int) -> None:
            busy = [0] * len(self.actors)
            for _, _, slot, _, _ in in_flight.values():
                busy[slot] += 1
            slot = busy.index(min(busy))
            actor = self.actors[slot]
            in_flight[actor.generate.remote(shard)] = (index, shard, slot, attempt, actor)

        exhausted = False
        while True:
            while not exhausted and submitted - yielded < limit:
                item = next(shards, None)
                if item is None:
                    exhausted = True
                    break
                submit(*item, 1)
                submitted += 1
            if not in_flight:
                return
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            index, shard, slot, attempt, actor = in_flight.pop(ref)
            try:
                finished[index] = self._get(ref)
            except ray.exceptions.RayActorError as exc:
                if attempt >= self.attempts:
                    raise ServerError(
                        f"ray: shard {index} failed {attempt} times, its actors died: {str(exc).splitlines()[0]}"
                    ) from None
                log(f"ray: the actor of shard {index} died; sending the shard again")
                if self.actors[slot] is actor:  # not replaced yet by the failure of another of its shards
                    self.actors[slot] = self._start_actor()
                self.retried += 1
                submit(index, shard, attempt + 1)
                continue
            while yielded in finished:
                yield from finished.pop(yielded)
                yielded += 1

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        self.ray.shutdown()
