"""`compare_engines` (scripts/bench_infer.py --engine both): one engine loaded at a time, timed on
the same requests, compared with the first one's answers."""

from __future__ import annotations

import pytest
from benchlib.inference import compare_engines

from nerft.inference.engines import Generation, batched


class EchoEngine:
    """Answers each request with its own text (or `wrong` for the requests in `wrong_at`);
    records its batches and whether it was closed."""

    def __init__(self, log: list, name: str, wrong_at: tuple[int, ...] = ()):
        self.log, self.name, self.wrong_at = log, name, wrong_at
        self.batch_size = 1
        log.append(f"open {name}")

    def generate(self, requests):
        index = 0
        for batch in batched(requests, self.batch_size):
            self.log.append(f"{self.name} batch {len(batch)}")
            for request in batch:
                yield Generation("wrong" if index in self.wrong_at else request, "stop")
                index += 1

    def close(self):
        self.log.append(f"close {self.name}")


def test_engines_run_one_after_the_other_and_are_compared_with_the_first():
    log: list = []
    requests = ["a", "b", "c", "d", "e"]
    result = compare_engines(
        [("hf", 2, lambda: EchoEngine(log, "hf")), ("vllm", 5, lambda: EchoEngine(log, "vllm", wrong_at=(3,)))],
        requests,
        warmup=2,
    )
    assert log == [
        "open hf",
        "hf batch 2",
        "hf batch 2",
        "hf batch 2",
        "hf batch 1",
        "close hf",  # warm-up (2), then 5 in batches of 2
        "open vllm",
        "vllm batch 2",
        "vllm batch 5",
        "close vllm",
    ]
    hf, vllm = result["engines"]
    assert result["requests"] == 5
    assert (hf["engine"], hf["batch_size"], hf["identical"], hf["ratio"]) == ("hf", 2, 5, 1.0)
    assert (vllm["engine"], vllm["batch_size"], vllm["identical"]) == ("vllm", 5, 4)
    assert vllm["differing"] == [{"index": 3, "reference": "d", "answer": "wrong"}]
    assert vllm["ratio"] == pytest.approx(vllm["predictions_per_second"] / hf["predictions_per_second"], rel=0.01)


def test_an_engine_is_closed_even_when_it_fails():
    log: list = []

    class Broken(EchoEngine):
        def generate(self, requests):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compare_engines([("broken", 1, lambda: Broken(log, "broken"))], ["a"])
    assert log == ["open broken", "close broken"]
