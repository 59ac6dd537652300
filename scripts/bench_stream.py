#!/usr/bin/env python
"""Benchmark streaming prediction: peak memory of `nerft predict --data --out` at 10k and 1M sentences.

Each size runs `nerft.bench.streaming.predict_file` (the command's own reading, resuming and
writing, with an engine that answers instantly) once in a fresh child process
(`nerft.bench.memory`), on a synthetic file made from the sample (`nerft.bench.synthetic`). The
ratio of the two peaks, from one run, is the check: flat memory is a ratio near 1.

    .venv/bin/python scripts/bench_stream.py                       # 10k vs 1M sentences
    .venv/bin/python scripts/bench_stream.py --small 1000 --large 20000 --json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = ROOT / "data" / "sample" / "train.jsonl"
TARGET = "nerft.bench.streaming:predict_file"
MAX_GROWTH = 1.5  # issue 14: memory flat from 10k to 1M sentences


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        type=Path,
        default=DEFAULT_BASE,
        help="records the synthetic files cycle through (default: the sample)",
    )
    parser.add_argument("--small", type=int, default=10_000, help="sentences of the smaller file")
    parser.add_argument("--large", type=int, default=1_000_000, help="sentences of the larger file")
    parser.add_argument("--tmp", type=Path, default=None, help="where the files go (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def run(base_path: Path, small: int, large: int, tmp: Path | None = None) -> dict:
    from nerft.bench.machine import describe_machine
    from nerft.bench.memory import measure_call
    from nerft.bench.report import log
    from nerft.bench.synthetic import write_synthetic_cluener
    from nerft.data.load import load_records

    base = [record.to_clue() for record in load_records(base_path)]
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="nerft-bench-stream-", dir=tmp) as folder:
        for count in (small, large):
            data = write_synthetic_cluener(Path(folder) / f"in-{count}.jsonl", base, count)
            out = Path(folder) / f"out-{count}.jsonl"
            log(f"predicting {count:,} sentences ({data.stat().st_size / 2**20:.1f} MiB)")
            call = measure_call(TARGET, data=str(data), out=str(out))
            rows = sum(1 for _ in open(out, "rb"))
            sizes[count] = {
                "sentences": count,
                "rows_written": rows,
                "input_mib": round(data.stat().st_size / 2**20, 1),
                "output_mib": round(out.stat().st_size / 2**20, 1),
                "seconds": round(call.seconds, 2),
                "sentences_per_second": round(count / call.seconds),
                "baseline_rss_mib": round(call.baseline_rss_mib, 1),
                "peak_rss_mib": round(call.peak_rss_mib, 1),
                "growth_mib": round(call.growth_mib, 1),
            }
            data.unlink()
            out.unlink()
    ratio = sizes[large]["peak_rss_mib"] / sizes[small]["peak_rss_mib"]
    return {
        "machine": describe_machine(),
        "base": str(base_path),
        "sizes": list(sizes.values()),
        "peak_ratio": round(ratio, 3),
        "max_ratio": MAX_GROWTH,
    }


def format_result(result: dict) -> str:
    from nerft.bench.machine import machine_line
    from nerft.bench.report import format_table

    rows = [
        [
            s["sentences"],
            s["input_mib"],
            s["output_mib"],
            s["seconds"],
            s["sentences_per_second"],
            s["baseline_rss_mib"],
            s["peak_rss_mib"],
            s["growth_mib"],
        ]
        for s in result["sizes"]
    ]
    header = [
        "sentences",
        "input MiB",
        "output MiB",
        "seconds",
        "sentences/s",
        "RSS before MiB",
        "peak RSS MiB",
        "growth MiB",
    ]
    verdict = "flat" if result["peak_ratio"] <= result["max_ratio"] else "GROWS"
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"nerft predict --data --out with an instant engine, synthetic files from {result['base']}",
            "",
            format_table(header, rows),
            "",
            f"peak RSS ratio large/small: {result['peak_ratio']:.3f} ({verdict}; at most {result['max_ratio']})",
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args.base, args.small, args.large, args.tmp)
    from nerft.bench.report import json_text

    print(json_text(result) if args.json else format_result(result))
    return 0 if result["peak_ratio"] <= MAX_GROWTH else 1


if __name__ == "__main__":
    sys.exit(main())
