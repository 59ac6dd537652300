"""Sequential vs batched generation: the comparison's logic on a counting engine, and the script on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib.inference import compare_batching, timed_generation
from conftest import load_script

from nerft.inference.engines import Generation, batched

ROOT = Path(__file__).resolve().parents[1]


class CountingEngine:
    """Answers each request with its own text, except the last of every batch of 3 or more
    (a stand-in for a batching bug); records the size of every batch it ran."""

    name = "counting"

    def __init__(self):
        self.batch_size = 1
        self.batches: list[int] = []

    def generate(self, requests):
        for batch in batched(requests, self.batch_size):
            self.batches.append(len(batch))
            for index, request in enumerate(batch):
                wrong = len(batch) >= 3 and index == len(batch) - 1
                yield Generation("?" if wrong else request, "stop")


def test_timed_generation_sets_the_batch_size():
    engine = CountingEngine()
    run = timed_generation(engine, ["a", "b", "c", "d", "e"], 2)
    assert engine.batches == [2, 2, 1]
    assert (run.batch_size, run.requests, run.texts, run.finish_reasons) == (
        2,
        5,
        ["a", "b", "c", "d", "e"],
        ["stop"] * 5,
    )


def test_compare_batching_runs_warmup_then_every_mode_on_the_same_requests():
    engine = CountingEngine()
    result = compare_batching(engine, ["a", "b", "c", "d", "e", "f", "g"], batch_sizes=[2, 3], warmup=2)
    # warm-up: 2 requests at 1, 2 and 3; then 7 at 1, 7 at 2 (2+2+2+1), 7 at 3 (3+3+1)
    assert engine.batches == [1, 1, 2, 2] + [1] * 7 + [2, 2, 2, 1] + [3, 3, 1]
    assert result["requests"] == 7
    assert result["sequential"]["batch_size"] == 1 and result["sequential"]["stopped"] == 7
    by_size = {run["batch_size"]: run for run in result["batched"]}
    assert by_size[2]["identical"] == 7 and by_size[2]["differing"] == []
    # batches of 3 get their third answer wrong: requests c and f
    assert by_size[3]["identical"] == 5
    assert by_size[3]["differing"] == [
        {"index": 2, "sequential": "c", "batched": "?"},
        {"index": 5, "sequential": "f", "batched": "?"},
    ]


def test_an_engine_that_loses_answers_is_an_error():
    class Lossy(CountingEngine):
        def generate(self, requests):
            yield from list(super().generate(requests))[:-1]

    with pytest.raises(RuntimeError, match="answered 2 of 3 requests"):
        timed_generation(Lossy(), ["a", "b", "c"], 1)


def test_forward_passes_of_a_torch_model_are_counted_and_the_hook_removed():
    import torch

    class LengthEngine(CountingEngine):
        """One forward pass of its torch model per character of the answer (a token each)."""

        def __init__(self):
            super().__init__()
            self.model = torch.nn.Identity()

        def generate(self, requests):
            for request in requests:
                for _ in request:
                    self.model(torch.zeros(1))
                yield Generation(request, "stop")

    engine = LengthEngine()
    run = timed_generation(engine, ["ab", "cde", "f"], 1)
    assert run.forward_passes == 6 and run.to_dict()["forward_passes_per_answer"] == 2.0
    assert not engine.model._forward_hooks  # counting stops with the run
    assert timed_generation(CountingEngine(), ["a"], 1).to_dict()["forward_passes_per_answer"] is None


@pytest.mark.slow
def test_bench_infer_script_on_the_tiny_model(tiny_model, sample_dir, capsys):
    script = load_script("bench_infer")
    argv = [
        "--dev",
        str(sample_dir / "dev.jsonl"),
        "--limit",
        "4",
        "--batch-size",
        "4",
        "--model",
        str(tiny_model),
        "--json",
    ]
    code = script.main(argv)
    result = json.loads(capsys.readouterr().out)
    assert (result["engine"], result["prompt"], result["requests"]) == ("hf", "compact", 4)
    assert result["sequential"]["requests"] == 4
    (run,) = result["batched"]
    assert run["batch_size"] == 4 and run["identical"] == 4  # greedy answers do not depend on batching
    assert run["speedup"] == pytest.approx(
        run["predictions_per_second"] / result["sequential"]["predictions_per_second"], rel=1e-2
    )
    assert code == 0


def test_bench_infer_refuses_attention_for_vllm(capsys):
    script = load_script("bench_infer")
    assert script.main(["--engine", "vllm", "--attention", "eager"]) == 1
    assert "--attention is for --engine hf" in capsys.readouterr().err
