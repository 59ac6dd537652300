#!/usr/bin/env python
"""Benchmark grounded decoding and confidence on a trained run: hf and vLLM, with and without grounding.

Each row predicts the same gold sentences through `nerft eval`'s own path (`predict_and_score`)
and reports what grounding changes and what it costs: entities not in their sentence, micro and
macro F1 with a bootstrap 95% interval over sentences, seconds of answering, and what confidence
buys: the precision of the entities with confidence >= 0.9 against all entities, the best
threshold's F1 and the calibration error. Nothing is timed in the test suite: run it by hand on
an otherwise idle machine.

    .venv/bin/python scripts/bench_grounding.py --run runs/smol --gold dev300.jsonl --out /tmp/grounding
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = (("hf", False), ("hf", True), ("vllm", False), ("vllm", True))


def bootstrap_f1(gold_path: Path, predictions: Path, samples: int) -> tuple:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_quality import score_predictions

    micro, macro, _ = score_predictions(gold_path, predictions, samples=samples)
    return micro, macro


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--gold", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nerft-bench-grounding"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--rows", help="comma-separated engine:grounded rows, e.g. hf:1,vllm:0 (default: all four)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="a row whose folder already holds predictions.jsonl and report.json (e.g. from `nerft eval --out-dir`) is read, not predicted again",
    )
    args = parser.parse_args(argv)

    from nerft.inference.options import EngineOptions
    from nerft.inference.scoring import predict_and_score
    from nerft.runfolder import load_run

    run = load_run(args.run)
    rows = ROWS
    if args.rows:
        rows = tuple((name, flag == "1") for name, flag in (row.split(":") for row in args.rows.split(",")))
    print(
        "| engine | grounded | not in sentence | micro F1 [95% CI] | macro F1 [95% CI] | seconds | "
        "precision, confidence >= 0.9 (entities) | precision, all (entities) | best threshold (F1) | ECE |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for engine, grounded in rows:
        out = args.out / f"{engine}-{'grounded' if grounded else 'free'}"
        predictions = out / "predictions.jsonl"
        if args.keep and predictions.is_file() and (out / "report.json").is_file():
            data = json.loads((out / "report.json").read_text())
            seconds = data["prediction"]["seconds"]
        else:
            if predictions.exists():
                predictions.unlink()  # measure the answering, never resume
            result = predict_and_score(
                gold=args.gold, run=run, options=EngineOptions(engine=engine, grounded=grounded), out_dir=out
            )
            data = result.to_dict()
            seconds = result.counts.seconds
            (out / "report.json").write_text(json.dumps(data, ensure_ascii=False, indent=1))
        micro, macro = bootstrap_f1(args.gold, predictions, args.bootstrap)
        confidence = data.get("confidence") or {}
        high, best = confidence.get("high_confidence", {}), confidence.get("best", {})

        def f1(value):
            return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"

        print(
            f"| {engine} | {'yes' if grounded else 'no'} | {data['in_text']['not_in_text']} | {f1(micro)} | {f1(macro)} | "
            f"{seconds:.0f} | {high.get('precision', float('nan')):.3f} ({high.get('entities', 0)}) | "
            f"{confidence.get('all_precision', float('nan')):.3f} ({confidence.get('entities', 0)}) | "
            f"{best.get('threshold', float('nan')):.2f} ({best.get('f1', float('nan')):.3f}) | {confidence.get('ece', float('nan')):.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
