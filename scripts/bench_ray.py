#!/usr/bin/env python
"""Benchmark `nerft predict --ray` (Ray Data): sentences/s of one process against Ray Data with 2
actors on the same sentences, and the driver's peak memory as the corpus grows.

Each row is one `nerft predict --data FILE --out FILE --engine hf` (`benchlib.streaming.predict_with_run`)
in a fresh child process (`benchlib.memory`, whose peak RSS is that process's own: with --ray, the
driver's, not the actors' or Ray's). The sentences are the first of the CLUENER train set
(../shared/data/cluener/train.jsonl; synthetic ones from the sample when it is absent), cycled with
a distinct suffix each (`benchlib.synthetic`) for sizes beyond it. The rows must be the same in both
ways (answers compared line by line). Ray rows run on a new local cluster (`--ray local`), actors of
one CPU and one torch thread each; one process keeps torch's default threads.

    .venv/bin/python scripts/bench_ray.py --run runs/tiny                    # 10k both ways, 100k on Ray
    .venv/bin/python scripts/bench_ray.py --run runs/tiny --small 500 --large 2000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLUENER = ROOT.parent / "shared" / "data" / "cluener" / "train.jsonl"
SAMPLE = ROOT / "data" / "sample" / "train.jsonl"
TARGET = "benchlib.streaming:predict_with_run"
MAX_GROWTH = 1.5  # the driver's peak memory, large corpus against small: flat


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (the learned tiny run)")
    parser.add_argument(
        "--base", type=Path, default=None, help="records to cycle through (default: CLUENER train, else the sample)"
    )
    parser.add_argument("--small", type=int, default=10_000, help="sentences of the comparison (both ways)")
    parser.add_argument("--large", type=int, default=100_000, help="sentences of the Ray Data memory row")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors")
    parser.add_argument("--batch-size", type=int, default=16, help="hf batch size")
    parser.add_argument("--tmp", type=Path, default=None, help="where the files go (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def run(args) -> dict:
    from benchlib.machine import describe_machine
    from benchlib.report import log
    from benchlib.synthetic import write_synthetic_cluener

    from nerft.data.load import load_records

    base_path = args.base or (CLUENER if CLUENER.is_file() else SAMPLE)
    base = [record.to_clue() for record in load_records(base_path)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="nerft-bench-ray-", dir=args.tmp) as name:
        folder = Path(name)
        small = folder / f"in-{args.small}.jsonl"
        if len(base) >= args.small:  # the real sentences as they are
            small.write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in base[: args.small]), encoding="utf-8"
            )
        else:
            write_synthetic_cluener(small, base, args.small)
        large = write_synthetic_cluener(folder / f"in-{args.large}.jsonl", base, args.large)
        plan = [("one process", small, None), (f"ray data, {args.actors} actors", small, "local")]
        plan.append((f"ray data, {args.actors} actors", large, "local"))
        outputs = {}
        for label, data, ray in plan:
            count = sum(1 for _ in open(data, "rb"))
            out = folder / f"out-{len(rows)}.jsonl"
            log(f"{label}: {count:,} sentences")
            rows.append(_measure(label, data, out, count, args, ray))
            outputs[(label, count)] = out
        one = outputs[("one process", args.small)]
        ray_small = outputs[(f"ray data, {args.actors} actors", args.small)]
        identical = _same_answers(one, ray_small)
    ray_rows = [row for row in rows if row["ray"]]
    return {
        "machine": describe_machine(),
        "run": str(args.run),
        "base": str(base_path),
        "batch_size": args.batch_size,
        "rows": rows,
        "identical": identical,
        "speedup": round(ray_rows[0]["sentences_per_second"] / rows[0]["sentences_per_second"], 2),
        "driver_peak_ratio": round(ray_rows[1]["peak_rss_mib"] / ray_rows[0]["peak_rss_mib"], 3),
        "max_ratio": MAX_GROWTH,
    }


def _measure(label: str, data: Path, out: Path, count: int, args, ray: str | None) -> dict:
    from benchlib.memory import measure_call

    call = measure_call(
        TARGET, data=str(data), out=str(out), run=str(args.run), batch_size=args.batch_size, ray=ray, actors=args.actors
    )
    written = sum(1 for _ in open(out, "rb"))
    return {
        "way": label,
        "ray": ray is not None,
        "sentences": count,
        "rows_written": written,
        "seconds": round(call.seconds, 1),  # loading the model (and starting the cluster) included
        "sentences_per_second": round(count / call.seconds, 1),
        "peak_rss_mib": round(call.peak_rss_mib, 1),
    }


def _same_answers(one: Path, other: Path) -> str:
    with open(one, encoding="utf-8") as a, open(other, encoding="utf-8") as b:
        pairs = [(json.loads(x)["predict"], json.loads(y)["predict"]) for x, y in zip(a, b, strict=True)]
    return f"{sum(x == y for x, y in pairs)}/{len(pairs)}"


def format_result(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    keys = ["way", "sentences", "rows_written", "seconds", "sentences_per_second", "peak_rss_mib"]
    header = ["way", "sentences", "rows out", "seconds", "sentences/s", "driver peak RSS MiB"]
    ratio = result["driver_peak_ratio"]
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"run: {result['run']}   engine: hf, batch {result['batch_size']}   sentences: {result['base']}",
            "",
            format_table(header, [[row[key] for key in keys] for row in result["rows"]]),
            "",
            f"answers identical, one process vs Ray Data: {result['identical']}",
            f"Ray Data / one process: {result['speedup']:.2f}x sentences/s",
            f"driver peak RSS ratio large/small {ratio:.3f} ({'flat' if ratio <= result['max_ratio'] else 'GROWS'}; at most {result['max_ratio']})",
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    from benchlib.report import json_text

    print(json_text(result) if args.json else format_result(result))
    ok = (
        result["driver_peak_ratio"] <= MAX_GROWTH
        and result["identical"].split("/")[0] == result["identical"].split("/")[1]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
