#!/usr/bin/env python
"""Benchmark the prompt formats: training tokens per sample and padding waste, seed vs compact.

Every CLUENER train record is rendered in each format (`nerft.prompts`) and tokenized through the
Qwen chat template exactly as LLaMA-Factory's `qwen` template encodes it (`benchlib.tokens`):
prompt tokens (masked) and response tokens (the loss). Padding is the share of computed positions
that are padding when batching B samples in random order, grouped by length, or packed into rows
of --cutoff-len (default: the pack length `nerft train` picks for each format's data, about
--batch-size mean samples) (`benchlib.padding`). Finally every compact answer is parsed back with the
parser `nerft eval` uses, and scored against the record's entities: F1 must be 1.0.

    .venv/bin/python scripts/bench_tokens.py
    .venv/bin/python scripts/bench_tokens.py --limit 200 --batch-size 16 --cutoff-len 1024 --json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MAX_RATIO = 0.35  # issue 5: compact costs at most 35% of seed's tokens per training sample


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train",
        type=Path,
        default=SHARED / "cluener" / "train.jsonl",
        help="CLUE NER records (default: ../shared CLUENER train)",
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=SHARED / "tokenizers" / "qwen2",
        help="tokenizer folder (default: ../shared Qwen2)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use the first N records only")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="samples per batch for the padding figures (default 4: the tutorials' and nerft's qwen7b)",
    )
    parser.add_argument(
        "--cutoff-len", type=int, help="row length for the packed figures (default: nerft's choice per format)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def run(
    train: Path, tokenizer_dir: Path, *, limit: int | None = None, batch_size: int = 4, cutoff_len: int | None = None
) -> dict:
    from benchlib.machine import describe_machine
    from benchlib.report import log
    from benchlib.roundtrip import round_trip_scores
    from benchlib.tokens import compare_formats
    from transformers import AutoTokenizer

    from nerft.data.load import load_records
    from nerft.prompts import get_format

    records = load_records(train)[:limit]
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    log(f"tokenizing {len(records)} records of {train} in each format with {tokenizer_dir}")
    formats = compare_formats(records, tokenizer, batch_size=batch_size, cutoff_len=cutoff_len)
    seed, compact = formats["seed"], formats["compact"]
    roundtrip = round_trip_scores(records, get_format("compact"))
    return {
        "machine": describe_machine(),
        "train": str(train),
        "tokenizer": str(tokenizer_dir),
        "batch_size": batch_size,
        "formats": {
            name: {
                "tokens": data["tokens"].to_dict(),
                "cutoff_len": data["cutoff_len"],
                "padding": {s: p.to_dict() for s, p in data["padding"].items()},
            }
            for name, data in formats.items()
        },
        "ratios": {
            "tokens_per_sample": round(compact["tokens"].mean_tokens / seed["tokens"].mean_tokens, 4),
            "prompt_tokens": round(compact["tokens"].mean_prompt / seed["tokens"].mean_prompt, 4),
            "response_tokens": round(compact["tokens"].mean_response / seed["tokens"].mean_response, 4),
            # The compute a sample costs, padding included: the tutorials' setup (seed, random
            # batches) against nerft's (compact, packed).
            "positions_per_sample_packed_vs_seed_random": round(
                compact["padding"]["packed"].positions_per_sample / seed["padding"]["random"].positions_per_sample, 4
            ),
        },
        "round_trip": roundtrip,
    }


def format_result(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    formats, ratios = result["formats"], result["ratios"]
    token_rows = [
        [
            name,
            t["samples"],
            t["mean_tokens"],
            t["mean_prompt"],
            t["mean_response"],
            t["response_share"],
            t["max_tokens"],
            t["total_tokens"],
        ]
        for name, t in ((name, data["tokens"]) for name, data in formats.items())
    ]
    padding_rows = [
        [
            name,
            strategy,
            p["rows"],
            p["real_tokens"],
            p["computed_tokens"],
            f"{100 * p['waste']:.1f}%",
            p["positions_per_sample"],
            p["dropped"],
        ]
        for name, data in formats.items()
        for strategy, p in data["padding"].items()
    ]
    ratio = ratios["tokens_per_sample"]
    rt = result["round_trip"]
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"data: {result['train']}   tokenizer: {result['tokenizer']} (qwen chat template)",
            "",
            format_table(
                ["format", "samples", "tokens/sample", "prompt", "response", "loss share", "max", "total"], token_rows
            ),
            "",
            f"compact/seed tokens per sample: {ratio:.3f} (limit {MAX_RATIO}: {'PASS' if ratio <= MAX_RATIO else 'FAIL'})",
            f"compact/seed prompt tokens: {ratios['prompt_tokens']:.3f}   response tokens: {ratios['response_tokens']:.3f}",
            "",
            f"padding: batches of {result['batch_size']} padded to a multiple of 8; packed rows of "
            + ", ".join(f"{data['cutoff_len']} ({name})" for name, data in formats.items()),
            format_table(
                ["format", "strategy", "rows", "real", "computed", "waste", "positions/sample", "dropped"], padding_rows
            ),
            "",
            f"positions per sample, compact packed / seed random: {ratios['positions_per_sample_packed_vs_seed_random']:.3f}",
            f"round trip (compact answer -> nerft eval's parser): P {rt['precision']:.4f} R {rt['recall']:.4f} "
            f"F1 {rt['f1']:.4f} over {rt['gold']:,} entities ({'PASS' if rt['f1'] == 1.0 else 'FAIL'})",
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    for path in (args.train, args.tokenizer):
        if not path.exists():
            print(f"bench_tokens: error: {path}: not found (pass --train / --tokenizer)", file=sys.stderr)
            return 1
    result = run(args.train, args.tokenizer, limit=args.limit, batch_size=args.batch_size, cutoff_len=args.cutoff_len)
    from benchlib.report import json_text

    print(json_text(result) if args.json else format_result(result))
    passes = result["ratios"]["tokens_per_sample"] <= MAX_RATIO and result["round_trip"]["f1"] == 1.0
    return 0 if passes else 1


if __name__ == "__main__":
    sys.exit(main())
