#!/usr/bin/env python
"""Benchmark accuracy: what nerft's defaults (prompt, packing, LoRA rank) do to dev F1, on a real model.

Every arm trains the same real pretrained model (default `nerft:smollm2-135m` through the
`smollm2-cpu` preset) on the same CLUENER train records for the same wall-clock budget, then is
scored on the same dev sentences:

    compact r16   the preset's recipe: compact prompt, neat packing, LoRA rank 16 (lr 1e-3)
    seed          the tutorials' long instruction and JSON answers, same budget (fewer examples)
    seed same-ex  the seed prompt for as many examples as `compact r16` saw (more time)
    no packing    padded batches of 4 examples instead of packs
    r8, r64       other LoRA ranks (LoRA's lr 1e-3, alpha = 2 x rank, LLaMA-Factory's default)
    full          full fine-tuning (lr 1e-4)

The budget buys each arm a number of optimizer steps: a short probe run measures the arm's seconds
per step (start-up excluded), and the arm then trains `budget / seconds per step` steps with its
full learning-rate schedule, so each arm is the recipe a user would run for that long. Each arm
reports dev micro and macro F1 (CLUE's scoring, `nerft eval`) with a bootstrap 95% interval over
sentences, the examples seen and the training time. Nothing is timed in the test suite: this
script is run by hand on an otherwise idle machine (about 50 minutes here with the defaults);
run again with the same --work, it keeps the arms that finished and a trained arm's run.

    .venv/bin/python scripts/bench_quality.py --work /tmp/bench-quality
    .venv/bin/python scripts/bench_quality.py --arms "compact r16,full" --budget 120 --dev 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "cluener"
NERFT = [sys.executable, "-m", "nerft"]
PROBE_STEPS = 6  # the probe's speed is measured from its second logged step to its last


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...] = ()
    same_examples_as: str | None = None  # train as many steps as that arm did instead of the budget's
    engine: str = "vllm"


ARMS = (
    Arm("compact r16"),
    Arm("seed", ("data.prompt=seed",)),
    Arm("seed same-ex", ("data.prompt=seed",), same_examples_as="compact r16"),
    Arm("no packing", ("dataset.neat_packing=false",)),
    Arm("r8", ("method.lora_rank=8",)),
    Arm("r64", ("method.lora_rank=64",)),
    Arm("full", ("method.finetuning_type=full", "train.learning_rate=1e-4")),
)


@dataclass
class ArmResult:
    name: str
    steps: int
    examples: int
    seconds_per_step: float
    train_seconds: float
    micro: tuple[float, float, float]  # F1, low, high
    macro: tuple[float, float, float]
    not_in_text: int
    extra: dict = field(default_factory=dict)

    def row(self) -> str:
        def f1(value):
            return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"

        return (
            f"| {self.name} | {f1(self.micro)} | {f1(self.macro)} | {self.examples} | {self.steps} | "
            f"{self.seconds_per_step:.2f} | {self.train_seconds / 60:.1f} | {self.not_in_text} |"
        )


HEADER = (
    "| arm | dev micro F1 [95% CI] | dev macro F1 [95% CI] | examples seen | steps | s/step | train min | not in sentence |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- |"
)


# --- scoring with a bootstrap interval -----------------------------------------------------------


def sentence_counts(gold_mentions, predicted_mentions, labels):
    """Per-label (tp, fp, fn) of one sentence under CLUE's set scoring; predictions under labels
    outside `labels` are counted in an extra last row (false positives of micro, never of macro)."""
    import numpy as np

    counts = np.zeros((len(labels) + 1, 3), dtype=np.int64)
    index = {label: i for i, label in enumerate(labels)}
    gold, predicted = set(gold_mentions), set(predicted_mentions)
    for label, _ in predicted & gold:
        counts[index.get(label, len(labels)), 0] += 1
    for label, _ in predicted - gold:
        counts[index.get(label, len(labels)), 1] += 1
    for label, _ in gold - predicted:
        counts[index.get(label, len(labels)), 2] += 1
    return counts


def f1_scores(totals):
    """(micro F1, macro F1) of summed (labels + 1, 3) counts, as `nerft.metrics.clue` defines them:
    micro over every row, macro the mean over the dataset's labels that occur."""
    import numpy as np

    tp, fp, fn = totals[..., 0], totals[..., 1], totals[..., 2]

    def f1(tp, fp, fn):
        precision = np.divide(tp, tp + fp, out=np.zeros(tp.shape), where=(tp + fp) > 0)
        recall = np.divide(tp, tp + fn, out=np.zeros(tp.shape), where=(tp + fn) > 0)
        return np.divide(
            2 * precision * recall, precision + recall, out=np.zeros(tp.shape), where=(precision + recall) > 0
        )

    micro = f1(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    per_label = f1(tp[..., :-1], fp[..., :-1], fn[..., :-1])
    occurs = (tp[..., :-1] + fp[..., :-1] + fn[..., :-1]) > 0
    macro = np.divide((per_label * occurs).sum(-1), occurs.sum(-1), out=np.zeros(micro.shape), where=occurs.sum(-1) > 0)
    return micro, macro


def bootstrap(counts, *, samples: int = 1000, seed: int = 0):
    """Micro and macro F1 of (sentences, labels + 1, 3) counts, each with the 2.5 and 97.5
    percentiles of `samples` resamplings of the sentences (with replacement)."""
    import numpy as np

    micro, macro = f1_scores(counts.sum(0))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(samples, len(counts)))
    micro_draws, macro_draws = f1_scores(counts[draws].sum(1))
    interval = lambda draws: tuple(float(x) for x in np.percentile(draws, [2.5, 97.5]))  # noqa: E731
    return (float(micro), *interval(micro_draws)), (float(macro), *interval(macro_draws))


def score_predictions(gold_path: Path, predictions_path: Path, *, samples: int = 1000):
    """Bootstrap micro/macro F1 of a predictions.jsonl (nerft's rows: the raw answer in "predict")."""
    import numpy as np

    from nerft.data.load import load_records
    from nerft.metrics.parse import parse_output
    from nerft.prompts import CLUENER_LABELS

    gold = load_records(gold_path)
    rows = [json.loads(line) for line in predictions_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(rows) != len(gold):
        raise SystemExit(f"{predictions_path}: {len(rows)} predictions for {len(gold)} gold sentences")
    counts = np.stack(
        [
            sentence_counts(record.mentions(), parse_output(row["predict"]) or [], CLUENER_LABELS)
            for record, row in zip(gold, rows)
        ]
    )
    not_in_text = sum(
        1
        for record, row in zip(gold, rows)
        for _, text in (parse_output(row["predict"]) or [])
        if text not in record.text
    )
    return (*bootstrap(counts, samples=samples), not_in_text)


# --- running the arms ----------------------------------------------------------------------------


def run(argv: list[str], log: Path) -> None:
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    with open(log, "a") as handle:
        code = subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"failed ({code}): {' '.join(argv)}; see {log}")


def train(preset: str, out: Path, overrides, steps: int, log: Path, *, logging_steps: int) -> None:
    sets = [*overrides, f"train.max_steps={steps}", f"output.logging_steps={logging_steps}", "output.save_steps=100000"]
    run([*NERFT, "train", preset, "--output-dir", str(out), "--force", *sum((["--set", s] for s in sets), [])], log)


def seconds_per_step(run_dir: Path) -> float:
    """Seconds per optimizer step from the trainer log, start-up and the first step excluded."""
    from nerft.runfolder import RunFolder

    rows = [row for row in RunFolder(run_dir).trainer_log() if "loss" in row and "elapsed_time" in row]

    def seconds(text: str) -> float:
        hours, minutes, secs = (float(part) for part in text.split(":"))
        return hours * 3600 + minutes * 60 + secs

    first, last = rows[0], rows[-1]
    return (seconds(last["elapsed_time"]) - seconds(first["elapsed_time"])) / (
        last["current_steps"] - first["current_steps"]
    )


def examples_per_step(run_dir: Path) -> int:
    """Examples an optimizer step sees: nerft's batch size counts examples, packed or not."""
    import yaml

    train = yaml.safe_load((run_dir / "nerft.yaml").read_text(encoding="utf-8"))["train"]
    return int(train.get("per_device_train_batch_size", 1)) * int(train.get("gradient_accumulation_steps", 1))


def run_arm(arm: Arm, args, done: dict[str, ArmResult]) -> ArmResult:
    from nerft.runfolder import RunFolder

    work = args.work / arm.name.replace(" ", "-")
    work.mkdir(parents=True, exist_ok=True)
    finished = work / "result.json"
    if finished.is_file():  # a rerun in the same --work keeps the arms that finished
        kept = json.loads(finished.read_text())
        result = ArmResult(**{**kept, "micro": tuple(kept["micro"]), "macro": tuple(kept["macro"])})
        print(result.row() + " (kept from an earlier run)", flush=True)
        return result
    log = work / "log.txt"
    overrides = [*arm.overrides, f"data.train={args.train}", f"data.dev={args.dev_file}"]
    if arm.same_examples_as:
        reference = done[arm.same_examples_as]
        steps = reference.steps
        speed = float("nan")
    else:
        probe = work / "probe"
        if not (probe / "trainer_log.jsonl").is_file():
            train(args.preset, probe, overrides, PROBE_STEPS, log, logging_steps=1)
        speed = seconds_per_step(probe)
        steps = max(1, int(args.budget / speed))
    run_dir = work / "run"
    if not (run_dir / "adapter_config.json").is_file() and not (run_dir / "config.json").is_file():
        train(args.preset, run_dir, overrides, steps, log, logging_steps=max(1, steps // 20))
    results = RunFolder(run_dir).results()
    train_seconds = float(results.get("train_runtime", 0.0))
    if arm.same_examples_as:
        speed = train_seconds / steps
    eval_dir = work / "eval"
    run(
        [
            *NERFT,
            "eval",
            "--run",
            str(run_dir),
            "--gold",
            str(args.dev_file),
            "--engine",
            arm.engine,
            "--out-dir",
            str(eval_dir),
        ],
        log,
    )
    micro, macro, not_in_text = score_predictions(args.dev_file, eval_dir / "predictions.jsonl", samples=args.bootstrap)
    result = ArmResult(
        arm.name, steps, steps * examples_per_step(run_dir), speed, train_seconds, micro, macro, not_in_text
    )
    (work / "result.json").write_text(json.dumps(result.__dict__, indent=2))
    print(result.row(), flush=True)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=SHARED / "train.jsonl", help="CLUE NER train records")
    parser.add_argument("--dev", type=Path, default=SHARED / "dev.jsonl", help="CLUE NER dev records")
    parser.add_argument(
        "--dev-sentences", "--dev-n", dest="dev_n", type=int, default=200, help="score the first N dev sentences"
    )
    parser.add_argument("--preset", default="smollm2-cpu", help="the recipe every arm starts from")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per arm")
    parser.add_argument("--arms", help="comma-separated arm names (default: all): " + ", ".join(a.name for a in ARMS))
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamplings for the intervals")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nerft-bench-quality"))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.train, args.dev = args.train.resolve(), args.dev.resolve()
    args.dev_file = args.work / f"dev-first-{args.dev_n}.jsonl"
    with open(args.dev) as source:
        args.dev_file.write_text("".join(line for _, line in zip(range(args.dev_n), source)))
    chosen = [arm.strip() for arm in args.arms.split(",")] if args.arms else [arm.name for arm in ARMS]
    unknown = set(chosen) - {arm.name for arm in ARMS}
    if unknown:
        raise SystemExit(f"unknown arms: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    print(
        f"budget {args.budget:.0f} s of training per arm; dev: the first {args.dev_n} sentences of {args.dev}",
        flush=True,
    )
    print(HEADER, flush=True)
    done: dict[str, ArmResult] = {}
    for arm in ARMS:
        if arm.name in chosen:
            try:
                done[arm.name] = run_arm(arm, args, done)
            except SystemExit as failure:  # one arm's failure leaves the others to run
                print(f"| {arm.name} | failed: {failure} |", flush=True)
    print(f"\n{len(done)} arms in {(time.perf_counter() - started) / 60:.1f} minutes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
