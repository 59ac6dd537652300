#!/usr/bin/env python
"""Benchmark `nerft prepare`: throughput on CLUENER train, and peak memory as the input grows.

Each measurement runs `nerft.data.prepare.prepare_dataset` once in a fresh child process (see
`benchlib.memory`): throughput is records per second of the call; memory is the child's peak
RSS. The growth check writes synthetic files of SMALL and LARGE records made from the train file
(`benchlib.synthetic`) into a temporary folder, deleted afterwards.

    .venv/bin/python scripts/bench_prepare.py                    # CLUENER train, 100k vs 1M records
    .venv/bin/python scripts/bench_prepare.py --small 1000 --large 10000 --json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = ROOT.parent / "shared" / "data" / "cluener" / "train.jsonl"
PREPARE = "nerft.data.prepare:prepare_dataset"
MAX_GROWTH = 1.5  # issue 5: peak(1M) within 1.5x of peak(100k)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train", type=Path, default=DEFAULT_TRAIN, help="CLUE NER train file (default: ../shared CLUENER train)"
    )
    parser.add_argument("--small", type=int, default=100_000, help="records in the smaller synthetic file")
    parser.add_argument("--large", type=int, default=1_000_000, help="records in the larger synthetic file")
    parser.add_argument(
        "--tmp", type=Path, default=None, help="where the synthetic files go (default: the system temp dir)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def run(train: Path, small: int, large: int, tmp: Path | None = None) -> dict:
    from benchlib.machine import describe_machine
    from benchlib.memory import measure_call
    from benchlib.report import log
    from benchlib.synthetic import write_synthetic_cluener

    from nerft.data.load import load_records

    base = [record.to_clue() for record in load_records(train)]
    result: dict = {"machine": describe_machine(), "train": str(train), "records": len(base)}
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nerft-bench-prepare-", dir=tmp) as folder:
        folder = Path(folder)
        log(f"prepare on {train} ({len(base)} records)")
        call = measure_call(PREPARE, train=str(train), out_dir=str(folder / "out-train"))
        result["throughput"] = {
            "records": len(base),
            "seconds": round(call.seconds, 3),
            "records_per_second": round(len(base) / call.seconds),
            "peak_rss_mib": round(call.peak_rss_mib, 1),
        }
        sizes = {}
        for count in (small, large):
            path = write_synthetic_cluener(folder / f"synthetic-{count}.jsonl", base, count)
            mib = path.stat().st_size / 2**20
            log(f"prepare on {count} synthetic records ({mib:.0f} MiB)")
            call = measure_call(PREPARE, train=str(path), out_dir=str(folder / f"out-{count}"))
            sizes[count] = {
                "file_mib": round(mib, 1),
                "seconds": round(call.seconds, 2),
                "records_per_second": round(count / call.seconds),
                "baseline_rss_mib": round(call.baseline_rss_mib, 1),
                "peak_rss_mib": round(call.peak_rss_mib, 1),
                "growth_mib": round(call.growth_mib, 1),
            }
            path.unlink()  # the larger file is ~150 MB: do not keep two of them around
    ratio = sizes[large]["peak_rss_mib"] / sizes[small]["peak_rss_mib"]
    result["memory"] = {
        "small": small,
        "large": large,
        "runs": sizes,
        "peak_ratio": round(ratio, 3),
        "passes": ratio <= MAX_GROWTH,
    }
    return result


def format_result(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    tp, mem = result["throughput"], result["memory"]
    lines = [
        f"machine: {machine_line(result['machine'])}",
        f"throughput on {result['train']}: {tp['records']:,} records in {tp['seconds']:.2f} s = "
        f"{tp['records_per_second']:,.0f} records/s (validate + convert + write, two passes)",
        "",
        format_table(
            ["records", "file MiB", "seconds", "records/s", "baseline RSS MiB", "peak RSS MiB", "growth MiB"],
            [
                [
                    int(count),
                    run["file_mib"],
                    run["seconds"],
                    run["records_per_second"],
                    run["baseline_rss_mib"],
                    run["peak_rss_mib"],
                    run["growth_mib"],
                ]
                for count, run in mem["runs"].items()
            ],
        ),
        "",
        f"peak RSS ratio {mem['large']:,} / {mem['small']:,} records: {mem['peak_ratio']:.3f} "
        f"(limit {MAX_GROWTH}: {'PASS' if mem['passes'] else 'FAIL'})",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.train.is_file():
        print(f"bench_prepare: error: {args.train}: no such file (pass --train)", file=sys.stderr)
        return 1
    result = run(args.train, args.small, args.large, args.tmp)
    from benchlib.report import json_text

    print(json_text(result) if args.json else format_result(result))
    return 0 if result["memory"]["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
