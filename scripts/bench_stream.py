#!/usr/bin/env python
"""Benchmark streaming: peak memory of `nerft predict --data --out` and `nerft eval --predictions`
at 10k and 1M sentences.

Each size runs, each once in a fresh child process (`benchlib.memory`), on a synthetic file
made from the sample (`benchlib.synthetic`):
- predict: `benchlib.streaming.predict_file` (the command's own reading, resuming and
  writing, with an engine that answers instantly);
- eval: `benchlib.streaming.score_files` (the command's scoring of that file's predictions
  against the synthetic gold, streaming every wrong sentence into errors.jsonl, then report.json).
The ratio of the two peaks of each command, from one run, is the check: flat memory is a ratio
near 1.

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
PREDICT = "benchlib.streaming:predict_file"
SCORE = "benchlib.streaming:score_files"
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
    from benchlib.machine import describe_machine
    from benchlib.report import log
    from benchlib.synthetic import write_synthetic_cluener

    from nerft.data.load import load_records

    base = [record.to_clue() for record in load_records(base_path)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nerft-bench-stream-", dir=tmp) as name:
        folder = Path(name)
        for count in (small, large):
            data = write_synthetic_cluener(folder / f"in-{count}.jsonl", base, count)
            out, errors, report = (
                folder / f"{kind}-{count}.json{'l' * (kind != 'report')}" for kind in ("out", "errors", "report")
            )
            log(f"predicting {count:,} sentences ({data.stat().st_size / 2**20:.1f} MiB)")
            rows.append(_measure("predict", PREDICT, count, data, out, data=str(data), out=str(out)))
            log(f"scoring {count:,} predictions")
            arguments = dict(gold=str(data), predictions=str(out), errors=str(errors), report=str(report))
            rows.append(_measure("eval", SCORE, count, data, errors, **arguments))
            for path in (data, out, errors, report):
                path.unlink()
    ratios = {}
    for command in ("predict", "eval"):
        peaks = {row["sentences"]: row["peak_rss_mib"] for row in rows if row["command"] == command}
        ratios[command] = round(peaks[large] / peaks[small], 3)
    return {
        "machine": describe_machine(),
        "base": str(base_path),
        "sizes": rows,
        "peak_ratio": ratios,
        "max_ratio": MAX_GROWTH,
    }


def _measure(command: str, target: str, count: int, source: Path, written: Path, **arguments) -> dict:
    """One command on one file, in a child process: its time and memory, and what it wrote."""
    from benchlib.memory import measure_call

    call = measure_call(target, **arguments)
    return {
        "command": command,
        "sentences": count,
        "rows_written": sum(1 for _ in open(written, "rb")),
        "input_mib": round(source.stat().st_size / 2**20, 1),
        "output_mib": round(written.stat().st_size / 2**20, 1),
        "seconds": round(call.seconds, 2),
        "sentences_per_second": round(count / call.seconds),
        "baseline_rss_mib": round(call.baseline_rss_mib, 1),
        "peak_rss_mib": round(call.peak_rss_mib, 1),
        "growth_mib": round(call.growth_mib, 1),
    }


def format_result(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    keys = ["command", "sentences", "rows_written", "input_mib", "output_mib", "seconds", "sentences_per_second"]
    keys += ["baseline_rss_mib", "peak_rss_mib", "growth_mib"]
    header = ["command", "sentences", "rows out", "input MiB", "output MiB", "seconds", "sentences/s"]
    header += ["RSS before MiB", "peak RSS MiB", "growth MiB"]
    verdicts = [
        f"{command}: peak RSS ratio large/small {ratio:.3f} ({'flat' if ratio <= result['max_ratio'] else 'GROWS'}; at most {result['max_ratio']})"
        for command, ratio in result["peak_ratio"].items()
    ]
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"predict: nerft predict --data --out with an instant engine; eval: nerft eval --gold --predictions "
            f"--errors --report on its output; synthetic files from {result['base']}",
            "",
            format_table(
                header,
                [
                    [row[key] for key in keys]
                    for row in sorted(result["sizes"], key=lambda r: r["command"] != "predict")
                ],
            ),
            "",
            *verdicts,
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args.base, args.small, args.large, args.tmp)
    from benchlib.report import json_text

    print(json_text(result) if args.json else format_result(result))
    return 0 if max(result["peak_ratio"].values()) <= MAX_GROWTH else 1


if __name__ == "__main__":
    sys.exit(main())
