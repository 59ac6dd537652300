#!/usr/bin/env python
"""Benchmark scoring speed on a trained run: every way nerft can answer the same dev sentences, in one run.

Each row loads its engine, answers the first --limit sentences of --dev, and is compared with the
first row, the old default (`--engine hf`, batches of 8): sentences per second of the answering
(start-up excluded) and end to end (start-up included, as `nerft eval` spends it), the speed-up
over the first row, and how many answers are identical to its answers.

    hf b8            transformers, batches of 8 (the LoRA merged in memory)
    hf b32           batches of 32
    hf b1 lookup     one sentence at a time with prompt lookup (transformers' n-gram drafting)
    vllm adapter     vLLM with the LoRA adapter (its LoRA path)
    vllm merged      vLLM on the merged copy of the weights (the CPU default), output regex on
    vllm merged free the same without the output regex
    vllm ngram       vllm merged with n-gram speculation in batches

    .venv/bin/python scripts/bench_scoring.py --run runs/smol --limit 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEV = ROOT.parent / "shared" / "data" / "cluener" / "dev.jsonl"
ROWS = ("hf b8", "hf b32", "hf b1 lookup", "vllm adapter", "vllm merged", "vllm merged free", "vllm ngram")


def open_row(name: str, run):
    from nerft.inference.source import resolve_model

    source, fmt = resolve_model(run), run.prompt_format()
    if name.startswith("hf"):
        from nerft.inference.engines.hf import HFEngine

        size = int(name.split()[1][1:])
        return HFEngine(source, batch_size=size, speculation=name.endswith("lookup"))
    from nerft.inference.engines.vllm import VLLMEngine

    return VLLMEngine(
        source,
        fmt,
        structured=name in ("vllm adapter", "vllm merged", "vllm ngram"),
        cutoff_len=run.cutoff_len,
        speculation=name == "vllm ngram",
        merge_adapter=name != "vllm adapter",
    )


def measure(name: str, run, requests) -> dict:
    started = time.perf_counter()
    engine = open_row(name, run)
    loaded = time.perf_counter()
    try:
        answers = [generation.text for generation in engine.generate(requests)]
    finally:
        engine.close()
    done = time.perf_counter()
    return {"row": name, "load_s": loaded - started, "answer_s": done - loaded, "answers": answers}


def format_table(results: list[dict], count: int) -> str:
    base = results[0]
    lines = [
        "| engine | start-up s | answering s | sentences/s | end to end sentences/s | speed-up (answering) | same answers |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        rate = count / result["answer_s"]
        same = sum(a == b for a, b in zip(result["answers"], base["answers"]))
        lines.append(
            f"| {result['row']} | {result['load_s']:.1f} | {result['answer_s']:.1f} | {rate:.2f} | "
            f"{count / (result['load_s'] + result['answer_s']):.2f} | {base['answer_s'] / result['answer_s']:.2f}x | {same}/{count} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a nerft run folder (LoRA)")
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="CLUE NER sentences to answer")
    parser.add_argument("--limit", type=int, default=300, help="the first N sentences")
    parser.add_argument("--rows", help="comma-separated rows (default: all): " + ", ".join(ROWS))
    parser.add_argument("--json", type=Path, help="also write the results (answers included) here")
    args = parser.parse_args(argv)

    from nerft.data.load import load_records
    from nerft.inference.engines import ChatRequest
    from nerft.runfolder import load_run

    run = load_run(args.run)
    fmt = run.prompt_format()
    records = load_records(args.dev)[: args.limit]
    requests = [ChatRequest.for_text(fmt, record.text) for record in records]
    rows = [row.strip() for row in args.rows.split(",")] if args.rows else list(ROWS)
    results = []
    for name in rows:
        results.append(measure(name, run, requests))
        print(f"{name}: {len(requests) / results[-1]['answer_s']:.2f} sentences/s", file=sys.stderr, flush=True)
    print(format_table(results, len(requests)))
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
