#!/usr/bin/env python
"""Benchmark inference: predictions per second, one request at a time vs batched, in one run.

One engine is loaded once (`hf` by default, `vllm` on a GPU) and answers the same CLUENER dev
sentences with batch size 1, then with each --batch-size (`benchlib.inference`). The prompts
are nerft's (`ChatRequest.for_text`); the answers must come out identical.

The model is a nerft run folder (--run), any model folder (--model), or by default a tiny random
Qwen2 built on the spot (`nerft.models.tiny`; --tokenizer builds it with a real tokenizer).

    .venv/bin/python scripts/bench_infer.py                                  # CPU, tiny model
    .venv/bin/python scripts/bench_infer.py --engine vllm --model /models/qwen2.5-7b-random --limit 1343

`--engine both` compares engines instead of batch sizes: the hf engine (batched, --batch-size,
default 64) and the vllm engine (every sentence in one `LLM.generate`) answer the same sentences
with the same model, one loaded after the other, without the output-format constraint (so both
generate the same tokens); printed: predictions/s of each, vllm / hf, and identical answers. On a
machine without CUDA, vLLM is the CPU build in .venv-vllm (`nerft.inference.vllm_env`).

    .venv/bin/python scripts/bench_infer.py --engine both

`--engine scale` is the labelling-at-scale table (issue 14), every row on the same model and
sentences in this one run, each against hf sequential without prompt lookup: hf sequential with
and without prompt lookup, hf batched, vllm sequential and batched with and without n-gram
speculation. (Ray is measured end to end by `scripts/bench_ray.py`: `--ray` reads and writes
files through Ray Data, it is no longer an engine of a list of requests.) The hf rows count the
model's forward passes per answer. It needs --run (the vllm rows read its cutoff_len); --cycle N makes N distinct
sentences from the --dev records (`benchlib.synthetic`), e.g. from the sample the learned
quick-start run was trained on:

    .venv/bin/python scripts/bench_infer.py --engine scale --run runs/tiny --dev data/sample/train.jsonl --cycle 256 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEV = ROOT.parent / "shared" / "data" / "cluener" / "dev.jsonl"
MIN_SPEEDUP = 5.0  # issue 5: on the 2-core CPU with the tiny model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dev", type=Path, default=DEFAULT_DEV, help="sentences to answer (default: ../shared CLUENER dev)"
    )
    parser.add_argument("--limit", type=int, default=256, help="answer the first N sentences (0: all)")
    parser.add_argument(
        "--batch-size",
        type=int,
        action="append",
        dest="batch_sizes",
        help="batch size of a batched pass (repeatable; default: 8 and 64)",
    )
    parser.add_argument(
        "--engine",
        choices=("hf", "vllm", "both", "scale"),
        default="hf",
        help="both: hf vs vllm on the same model; scale: the issue 14 table",
    )
    parser.add_argument(
        "--cycle", type=int, help="answer N distinct sentences made by cycling through the --dev records"
    )
    parser.add_argument("--no-vllm", action="store_true", help="scale: leave out the vllm rows")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="a nerft run folder (its model, adapter and prompt format)")
    source.add_argument("--model", type=Path, help="a model folder (used without adapter)")
    parser.add_argument("--template", default="qwen", help="chat template of --model")
    parser.add_argument("--prompt", default="compact", help="prompt format of --model or the tiny model")
    parser.add_argument(
        "--tokenizer", type=Path, help="build the tiny model with this tokenizer (e.g. ../shared Qwen2)"
    )
    parser.add_argument(
        "--no-structured", action="store_true", help="vllm: decode without the output-format constraint"
    )
    parser.add_argument(
        "--attention", choices=("sdpa", "eager"), help="hf: switch the loaded model's attention implementation"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="hf: torch CPU threads (default: torch's own); 1 resists other work on a small machine",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def open_source(args, folder: Path):
    """The weights to load and the prompt format to ask in."""
    from nerft.inference.source import ModelSource, resolve_model
    from nerft.prompts import get_format
    from nerft.runfolder import load_run

    if args.run:
        run = load_run(args.run)
        return resolve_model(run), run.prompt_format(), str(args.run)
    if args.model:
        return ModelSource(str(args.model), None, args.template), get_format(args.prompt), str(args.model)
    from nerft.models.tiny import build_tiny_qwen2

    model = build_tiny_qwen2(folder / "tiny-qwen2", tokenizer_dir=args.tokenizer)
    described = "tiny random Qwen2 (hidden 64, 2 layers" + (f", tokenizer {args.tokenizer})" if args.tokenizer else ")")
    return ModelSource(str(model), None, "qwen"), get_format(args.prompt), described


def open_bench_engine(name: str, source, fmt, *, structured: bool = True):
    if name == "hf":
        from nerft.inference.engines.hf import HFEngine

        return HFEngine(source, batch_size=1)
    from nerft.inference.engines.vllm import VLLMEngine

    return VLLMEngine(source, fmt, batch_size=1, structured=structured)


def run_both(args) -> dict:
    """hf (batched) against vllm on the same model and sentences, measured in this one run."""
    from benchlib.inference import compare_engines
    from benchlib.machine import describe_machine
    from benchlib.report import log

    from nerft.data.load import load_records
    from nerft.inference.engines import ChatRequest
    from nerft.inference.engines.hf import HFEngine
    from nerft.inference.engines.vllm import VLLMEngine
    from nerft.inference.vllm_env import require_vllm_environment

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    environment = require_vllm_environment()
    records = load_records(args.dev)
    records = records[: args.limit] if args.limit else records
    hf_batch = (args.batch_sizes or [64])[0]
    with tempfile.TemporaryDirectory(prefix="nerft-bench-infer-") as folder:
        source, fmt, described = open_source(args, Path(folder))
        requests = [ChatRequest.for_text(fmt, record.text) for record in records]
        log(
            f"hf (batch size {hf_batch}) then vllm ({environment.distribution} {environment.vllm}, one batch): {len(requests)} sentences of {args.dev}"
        )
        result = compare_engines(
            [
                ("hf", hf_batch, lambda: HFEngine(source, batch_size=hf_batch)),
                ("vllm", len(requests), lambda: VLLMEngine(source, fmt, structured=False, environment=environment)),
            ],
            requests,
        )
    return {
        "machine": describe_machine(),
        "engine": "both",
        "threads": _torch_threads(),
        "vllm": environment.to_dict(),
        "model": described,
        "prompt": fmt.name,
        "dev": str(args.dev),
        **result,
    }


def compared_rows(engines: list[dict], *extra: str) -> list[list]:
    """Table rows of `compare_engines`' results: engine, batch, requests, load s, seconds,
    predictions/s, ratio, identical, then the `extra` fields."""
    return [
        [
            r["engine"],
            r["batch_size"],
            r["requests"],
            r["load_seconds"],
            r["seconds"],
            r["predictions_per_second"],
            f"{r['ratio']:.2f}x",
            f"{r['identical']}/{r['requests']}",
            *("-" if r[key] is None else r[key] for key in extra),
        ]
        for r in engines
    ]


def format_both(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    rows = compared_rows(result["engines"], "stopped", "hit_length_limit")
    hf, vllm = result["engines"]
    environment = result["vllm"]
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"hf: torch {result['threads']} threads   vllm: {environment['distribution']} {environment['vllm']}, torch {environment['torch']} ({environment['device']})",
            f"model: {result['model']}   prompt: {result['prompt']}   data: {result['dev']}",
            "",
            format_table(
                [
                    "engine",
                    "batch",
                    "requests",
                    "load s",
                    "seconds",
                    "predictions/s",
                    "vs hf",
                    "identical",
                    "stopped",
                    "hit limit",
                ],
                rows,
            ),
            "",
            f"vllm / hf predictions per second: {vllm['predictions_per_second'] / hf['predictions_per_second']:.2f}x",
        ]
    )


def run(args) -> dict:
    from benchlib.inference import compare_batching
    from benchlib.machine import describe_machine
    from benchlib.report import log

    from nerft.data.load import load_records
    from nerft.inference.engines import ChatRequest

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records = load_records(args.dev)
    records = records[: args.limit] if args.limit else records
    with tempfile.TemporaryDirectory(prefix="nerft-bench-infer-") as folder:
        source, fmt, described = open_source(args, Path(folder))
        requests = [ChatRequest.for_text(fmt, record.text) for record in records]
        engine = open_bench_engine(args.engine, source, fmt, structured=not args.no_structured)
        try:
            model = getattr(engine, "model", None)  # the hf engine's transformers model
            if args.attention:
                model.set_attn_implementation(args.attention)
            attention = model.config._attn_implementation if model is not None else None
            sizes = args.batch_sizes or [8, 64]
            log(
                f"{args.engine}: {len(requests)} sentences of {args.dev}, batch size 1 then {', '.join(map(str, sizes))}"
            )
            result = compare_batching(engine, requests, batch_sizes=sizes)
        finally:
            engine.close()
    return {
        "machine": describe_machine(),
        "engine": args.engine,
        "attention": attention,
        "threads": _torch_threads() if args.engine == "hf" else None,
        "model": described,
        "prompt": fmt.name,
        "dev": str(args.dev),
        **result,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def format_result(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    seq = result["sequential"]
    rows = [
        [
            "sequential",
            1,
            seq["requests"],
            seq["seconds"],
            seq["predictions_per_second"],
            "1.00x",
            "",
            seq["stopped"],
            seq["hit_length_limit"],
        ]
    ]
    rows += [
        [
            "batched",
            r["batch_size"],
            r["requests"],
            r["seconds"],
            r["predictions_per_second"],
            f"{r['speedup']:.2f}x",
            f"{r['identical']}/{r['requests']}",
            r["stopped"],
            r["hit_length_limit"],
        ]
        for r in result["batched"]
    ]
    attention = f" ({result['attention']} attention, {result['threads']} threads)" if result.get("attention") else ""
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"engine: {result['engine']}{attention}   model: {result['model']}   prompt: {result['prompt']}",
            f"data: {result['dev']}",
            "",
            format_table(
                [
                    "mode",
                    "batch",
                    "requests",
                    "seconds",
                    "predictions/s",
                    "vs sequential",
                    "identical",
                    "stopped",
                    "hit limit",
                ],
                rows,
            ),
        ]
    )


def scale_engines(args, source, fmt, batch: int) -> list:
    """The rows of the scale table: (label, batch size, a function that loads the engine)."""
    from nerft.inference.engines.hf import HFEngine
    from nerft.runfolder import load_run

    run = load_run(args.run)
    rows = [
        ("hf sequential", 1, lambda: HFEngine(source, batch_size=1, speculation=False)),
        ("hf sequential + prompt lookup", 1, lambda: HFEngine(source, batch_size=1, speculation=True)),
        (f"hf batched {batch}", batch, lambda: HFEngine(source, batch_size=batch)),
    ]
    if not args.no_vllm:
        from nerft.inference.engines.vllm import VLLMEngine
        from nerft.inference.vllm_env import require_vllm_environment

        environment = require_vllm_environment()

        def vllm(size: int, speculation: bool):
            return lambda: VLLMEngine(
                source,
                fmt,
                batch_size=size,
                structured=False,
                cutoff_len=run.cutoff_len,
                speculation=speculation,
                environment=environment,
            )

        rows += [
            ("vllm sequential", 1, vllm(1, False)),
            ("vllm sequential + ngram", 1, vllm(1, True)),
            (f"vllm batched {batch}", batch, vllm(batch, False)),
            (f"vllm batched {batch} + ngram", batch, vllm(batch, True)),
        ]

    return rows


def run_scale(args) -> dict:
    """The scale table: every engine and mode on the same model and sentences, in this one run."""
    from benchlib.inference import compare_engines
    from benchlib.machine import describe_machine
    from benchlib.report import log
    from benchlib.synthetic import synthetic_records

    from nerft.data.load import load_records
    from nerft.inference.engines import ChatRequest

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    texts = [record.text for record in load_records(args.dev)]
    if args.cycle:
        texts = [row["text"] for row in synthetic_records([{"text": text} for text in texts], args.cycle)]
    texts = texts[: args.limit] if args.limit else texts
    batch = (args.batch_sizes or [16])[0]
    with tempfile.TemporaryDirectory(prefix="nerft-bench-infer-") as folder:
        source, fmt, described = open_source(args, Path(folder))
        requests = [ChatRequest.for_text(fmt, text) for text in texts]
        engines = scale_engines(args, source, fmt, batch)
        log(f"scale: {len(engines)} engines and modes, {len(requests)} sentences from {args.dev}, one after the other")
        result = compare_engines(engines, requests)
    return {
        "machine": describe_machine(),
        "engine": "scale",
        "threads": _torch_threads(),
        "model": described,
        "prompt": fmt.name,
        "dev": str(args.dev),
        **result,
    }


def format_scale(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    rows = compared_rows(result["engines"], "forward_passes_per_answer")
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"model: {result['model']}   prompt: {result['prompt']}   data: {result['dev']}   hf: torch {result['threads']} threads",
            "",
            format_table(
                [
                    "engine and mode",
                    "batch",
                    "requests",
                    "load s",
                    "seconds",
                    "predictions/s",
                    "vs hf sequential",
                    "identical",
                    "forwards/answer",
                ],
                rows,
            ),
            "",
            "forwards/answer: calls of the transformers model over answers (sequential: one per generated token,",
            "fewer where prompt lookup's drafts are accepted; a batched call serves its whole batch; - where the",
            "model runs in another process)",
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.attention and args.engine != "hf":
        print("bench_infer: error: --attention is for --engine hf", file=sys.stderr)
        return 1
    if not args.dev.is_file():
        print(f"bench_infer: error: {args.dev}: no such file (pass --dev)", file=sys.stderr)
        return 1
    from benchlib.report import json_text

    if args.engine == "scale":
        if not args.run:
            print("bench_infer: error: --engine scale needs --run (a run folder)", file=sys.stderr)
            return 1
        result = run_scale(args)
        print(json_text(result) if args.json else format_scale(result))
        return 0 if all(run["identical"] == run["requests"] for run in result["engines"]) else 1
    if args.engine == "both":
        result = run_both(args)
        print(json_text(result) if args.json else format_both(result))
        return 0 if all(run["identical"] == run["requests"] for run in result["engines"]) else 1
    result = run(args)
    print(json_text(result) if args.json else format_result(result))
    return 0 if all(run["identical"] == run["requests"] for run in result["batched"]) else 1


if __name__ == "__main__":
    sys.exit(main())
