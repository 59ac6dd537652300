#!/usr/bin/env python
"""Benchmark `nerft predict --ray` (Ray Data): sentences/s of one process against Ray Data with 2
actors on the same sentences, and the driver's peak memory as the corpus grows.

Each row is one `nerft predict --data FILE --out FILE --engine hf` (`benchlib.streaming.predict_with_run`)
in a fresh child process (`benchlib.memory`, whose peak RSS is that process's own: with --ray, the
driver's, not the actors' or Ray's). The sentences are the first of the CLUENER train set
($NERFT_SHARED or ../shared, /data/cluener/train.jsonl; synthetic ones from the sample when it is absent), cycled with
a distinct suffix each (`benchlib.synthetic`) for sizes beyond it. The rows must be the same in both
ways (answers compared line by line). Ray rows run on a new local cluster (`--ray local`), actors of
one CPU and one torch thread each; one process keeps torch's default threads.

    .venv/bin/python scripts/bench_ray.py --run runs/tiny                    # 10k both ways; 10k, 100k on Ray
    .venv/bin/python scripts/bench_ray.py --run runs/tiny --speed 1000 --instant --json

`--instant`: the memory rows' actors answer with `benchlib.streaming.CopyEngine` (what the driver
reads, orders and writes per row is the same; a busy machine need not spend an hour on the model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NERFT_SHARED") or ROOT.parent / "shared")  # as tests/conftest.py finds it
CLUENER = SHARED / "data" / "cluener" / "train.jsonl"
SAMPLE = ROOT / "data" / "sample" / "train.jsonl"
TARGET = "benchlib.streaming:predict_with_run"
MAX_GROWTH = 1.5  # the driver's peak memory, large corpus against small: flat


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (the learned tiny run)")
    parser.add_argument(
        "--base", type=Path, default=None, help="records to cycle through (default: CLUENER train, else the sample)"
    )
    parser.add_argument("--speed", type=int, default=10_000, help="sentences of the comparison (both ways, the model)")
    parser.add_argument("--small", type=int, default=10_000, help="sentences of the smaller Ray Data memory row")
    parser.add_argument("--large", type=int, default=100_000, help="sentences of the larger Ray Data memory row")
    parser.add_argument(
        "--instant",
        action="store_true",
        help="the memory rows' actors answer instantly (benchlib.streaming.CopyEngine): the driver's work per row is the same, the model's time is not spent",
    )
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
    ray_way = f"ray data, {args.actors} actors"
    with tempfile.TemporaryDirectory(prefix="nerft-bench-ray-", dir=args.tmp) as name:
        folder = Path(name)

        def corpus(count: int) -> Path:
            path = folder / f"in-{count}.jsonl"
            if not path.exists() and len(base) >= count:  # the real sentences as they are
                lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in base[:count])
                path.write_text("".join(lines), encoding="utf-8")
            elif not path.exists():
                write_synthetic_cluener(path, base, count)
            return path

        # (way, sentences, ray, instant): the speed pair on the model, then the driver's memory
        plan = [("one process", args.speed, None, False), (ray_way, args.speed, "local", False)]
        plan += [(ray_way, count, "local", args.instant) for count in (args.small, args.large)]
        outputs = {}
        for way, count, ray, instant in plan:
            if (way, count, instant) in outputs:
                continue  # the speed row of Ray is also the small memory row
            engine = "instant" if instant else "model"
            log(f"{way}, {engine}: {count:,} sentences")
            out = folder / f"out-{len(rows)}.jsonl"
            rows.append(_measure(way, corpus(count), out, count, args, ray, instant))
            outputs[(way, count, instant)] = out
        identical = _same_answers(outputs[("one process", args.speed, False)], outputs[(ray_way, args.speed, False)])
    speed = {row["way"]: row["sentences_per_second"] for row in rows if row["engine"] == "model"}
    peaks = {
        row["sentences"]: row["peak_rss_mib"]
        for row in rows
        if row["ray"] and row["engine"] == ("instant" if args.instant else "model")
    }
    return {
        "machine": describe_machine(),
        "run": str(args.run),
        "base": str(base_path),
        "batch_size": args.batch_size,
        "rows": rows,
        "identical": identical,
        "speedup": round(speed[ray_way] / speed["one process"], 2),
        "driver_peak_ratio": round(peaks[args.large] / peaks[args.small], 3),
        "max_ratio": MAX_GROWTH,
    }


def _measure(way: str, data: Path, out: Path, count: int, args, ray: str | None, instant: bool) -> dict:
    from benchlib.memory import measure_call

    arguments = dict(data=str(data), out=str(out), run=str(args.run), batch_size=args.batch_size)
    call = measure_call(TARGET, **arguments, ray=ray, actors=args.actors, instant=instant)
    return {
        "way": way,
        "engine": "instant" if instant else "model",
        "ray": ray is not None,
        "sentences": count,
        "rows_written": sum(1 for _ in open(out, "rb")),
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

    keys = ["way", "engine", "sentences", "rows_written", "seconds", "sentences_per_second", "peak_rss_mib"]
    header = ["way", "engine", "sentences", "rows out", "seconds", "sentences/s", "peak RSS MiB (driver)"]
    ratio = result["driver_peak_ratio"]
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"run: {result['run']}   engine: hf, batch {result['batch_size']} (model), or instant answers (CopyEngine)   sentences: {result['base']}",
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
