"""Scale-out on Ray: the sentences sharded over Ray actors, each running one of nerft's engines.

`RayEngine` is an `Engine` like the others, so `predict_records` streams, writes rows in input
order and resumes through it unchanged. It starts `actors` actors on a Ray cluster (one per GPU
of the cluster, or CPU actors of `cpus_per_actor` CPUs each), each loading the run's weights
with `open_engine` (hf, or vllm where installed): the answers are the single-process engine's.
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
import sys
from collections.abc import Iterable, Iterator

from nerft.errors import ConfigError, ServerError
from nerft.inference import RAY_DEFAULT
from nerft.inference.engines import ChatRequest, Generation, batched

DEFAULT_CPU_ACTORS = 2
HF_SHARD_BATCHES = 4
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: an actor never waits for the driver


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EngineActor:
    """One engine inside a Ray worker process (made a Ray actor class by `RayEngine`)."""

    def __init__(self, engine: str, run_dir: str, options: dict, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from nerft.inference.predict import open_engine
        from nerft.runfolder import load_run

        self.engine = open_engine(engine, run=load_run(run_dir), **options)

    def describe(self) -> dict:
        return self.engine.describe()

    def pid(self) -> int:
        import os

        return os.getpid()

    def generate(self, shard: list[ChatRequest]) -> list[Generation]:
        return list(self.engine.generate(shard))


class RayEngine:
    name = "ray"

    def __init__(
        self,
        engine: str,
        run_dir: str,
        *,
        address: str,
        actors: int | None = None,
        cpus_per_actor: float | None = None,
        shard_size: int | None = None,
        attempts: int = 3,
        **options,
    ):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray, which is not installed", hint="pip install 'nerft[ray]'") from None
        if engine not in ("hf", "vllm"):
            raise ConfigError(f"--ray runs the hf or vllm engine in its actors, not {engine}")
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
            shard_size or self._default_shard(engine, options),
            attempts,
        )
        if gpus:
            self.resources = {"num_gpus": 1, "num_cpus": cpus_per_actor or 1}
            count, threads = actors or gpus, None
        else:
            self.resources = {"num_cpus": cpus_per_actor or 1}
            count, threads = actors or DEFAULT_CPU_ACTORS, math.ceil(cpus_per_actor or 1)
        self._arguments = (engine, str(run_dir), options, threads)
        self.actors = [self._start_actor() for _ in range(count)]
        self.retried = 0  # shards sent again because their actor died
        where = f"{gpus} GPUs" if gpus else f"{self.resources['num_cpus']:g} CPU each"
        cluster = ray.get_runtime_context().gcs_address if address == RAY_DEFAULT else address
        log(f"ray: {count} {engine} actors on {cluster} ({where})")
        self._description = self._get(self.actors[0].describe.remote())

    @staticmethod
    def _default_shard(engine: str, options: dict) -> int:
        """vllm: one of its batches (it schedules a whole batch at once); hf: `HF_SHARD_BATCHES` of
        its batches, enough to sort by length, few enough that a small input still spreads."""
        from nerft.inference.engines import hf, vllm

        if engine == "vllm":
            return options.get("batch_size") or vllm.DEFAULT_BATCH_SIZE
        return (options.get("batch_size") or hf.DEFAULT_BATCH_SIZE) * HF_SHARD_BATCHES

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
