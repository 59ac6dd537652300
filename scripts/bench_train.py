#!/usr/bin/env python
"""Benchmark training: samples per second, the tutorials' config and prompt vs nerft's, same steps.

Meant for a GPU (it runs on a CPU too, with --shape tiny, to check the pipeline). Both runs train
the same model for --steps optimizer steps through the real `llamafactory-cli`, without
evaluation (`benchlib.training`):
- tutorial: the tutorials' YAML on CLUENER train in the `seed` prompt format;
- nerft: `nerft train PRESET` (default qwen7b) on the same records in the `compact` format.
The model is --model, or one with random weights built from --shape (Qwen2.5-7B's by default;
weights do not change the speed) with the --tokenizer given.

    .venv/bin/python scripts/bench_train.py --work /tmp/bench-train           # GPU: Qwen2.5-7B shape
    .venv/bin/python scripts/bench_train.py --model runs/tiny-model --shape tiny --steps 1 --workers 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARGET = 3.0  # issue 5: nerft trains at least 3x the tutorials' samples per second


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=SHARED / "cluener" / "train.jsonl", help="CLUE NER train records")
    parser.add_argument(
        "--dev",
        type=Path,
        default=SHARED / "cluener" / "dev.jsonl",
        help="CLUE NER dev records (nerft's config wants them)",
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=SHARED / "tokenizers" / "qwen2", help="tokenizer of the random model"
    )
    parser.add_argument("--model", type=Path, help="train this model folder instead of building a random one")
    parser.add_argument(
        "--shape", choices=("qwen2.5-7b", "tiny"), default="qwen2.5-7b", help="shape of the random model"
    )
    parser.add_argument(
        "--layers", type=int, help="override the random model's number of layers (changes absolute speed)"
    )
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of each run")
    parser.add_argument("--preset", default="qwen7b", help="nerft config (preset name or file) for nerft's run")
    parser.add_argument(
        "--workers", type=int, help="preprocessing / dataloader workers of both runs (default: each config's own)"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the model, data and run folders here (default: a temporary folder)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def run(args, work: Path) -> dict:
    import torch
    import yaml
    from benchlib.machine import describe_machine
    from benchlib.report import log
    from benchlib.tokens import count_sample_tokens
    from benchlib.training import (
        QWEN25_7B_SHAPE,
        build_random_model,
        nerft_overrides,
        samples_per_row,
        throughput,
        tutorial_train_args,
    )

    from nerft.data.prepare import prepare_dataset
    from nerft.errors import NerftError
    from nerft.io import write_text_atomic
    from nerft.models.tiny import TINY_CONFIG
    from nerft.process import run_program
    from nerft.training.lengths import iter_alpaca_examples
    from nerft.training.summary import read_summary
    from nerft.training.train import train

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    model = args.model
    if model is None:
        shape = dict(QWEN25_7B_SHAPE if args.shape == "qwen2.5-7b" else TINY_CONFIG)
        if args.layers:
            shape["num_hidden_layers"] = args.layers
        log(f"building a random {args.shape} model ({shape['num_hidden_layers']} layers) in {work / 'model'}")
        model = build_random_model(
            work / "model", tokenizer_dir=args.tokenizer, shape=shape, dtype="bfloat16" if bf16 else "float32"
        )

    # The tutorials' run: seed-format data, their YAML, llamafactory-cli.
    data = prepare_dataset(train=args.train, out_dir=work / "tutorial-data", prompt="seed", val_size=0)
    tutorial_dir = work / "tutorial"
    tutorial_args = tutorial_train_args(
        model=model,
        dataset_dir=data.out_dir,
        dataset=data.dataset_names["train"],
        output_dir=tutorial_dir,
        max_steps=args.steps,
        bf16=bf16,
        workers=args.workers,
    )
    tutorial_yaml = work / "tutorial_train.yaml"
    write_text_atomic(tutorial_yaml, yaml.safe_dump(tutorial_args, sort_keys=False, allow_unicode=True))
    log(f"tutorial run: {args.steps} steps")
    code = run_program(["llamafactory-cli", "train", tutorial_yaml], stdout_to_stderr=True)
    if code != 0:
        raise NerftError(f"the tutorial run failed (llamafactory-cli exited with {code}); its log is above")
    tutorial_seconds = read_summary(tutorial_dir).runtime_s

    # nerft's run: the preset, through nerft train.
    nerft_dir = work / "nerft"
    log(f"nerft run ({args.preset}): {args.steps} steps")
    overrides = nerft_overrides(
        model=model, train=args.train, dev=args.dev, max_steps=args.steps, bf16=bf16, workers=args.workers
    )
    result = train(args.preset, output_dir=nerft_dir, overrides=overrides, force=nerft_dir.exists(), log=log)
    if result.exit_code != 0:
        raise NerftError(f"the nerft run failed (llamafactory-cli exited with {result.exit_code}); its log is above")
    nerft_args = yaml.safe_load(result.rendered_yaml)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    examples = iter_alpaca_examples(Path(nerft_args["dataset_dir"]), nerft_args["dataset"].split(","))
    lengths = [count.total for count in count_sample_tokens(tokenizer, examples)]

    runs = [
        throughput("tutorial", tutorial_args, tutorial_seconds),
        throughput("nerft", nerft_args, read_summary(nerft_dir).runtime_s, samples_per_row(lengths, nerft_args)),
    ]
    keys = (
        "cutoff_len",
        "packing",
        "neat_packing",
        "flash_attn",
        "enable_liger_kernel",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "disable_gradient_checkpointing",
        "bf16",
    )
    return {
        "machine": describe_machine(),
        "model": str(model),
        "shape": args.shape if args.model is None else None,
        "steps": args.steps,
        "runs": [run.to_dict() for run in runs],
        "configs": {"tutorial": {k: tutorial_args.get(k) for k in keys}, "nerft": {k: nerft_args.get(k) for k in keys}},
        "speedup": round(runs[1].samples_per_second / runs[0].samples_per_second, 3),
        "report": result.report,
    }


def format_result(result: dict) -> str:
    from benchlib.machine import machine_line
    from benchlib.report import format_table

    rows = [
        [
            r["name"],
            r["steps"],
            r["rows_per_step"],
            r["samples_per_row"],
            r["samples"],
            r["seconds"],
            r["samples_per_second"],
        ]
        for r in result["runs"]
    ]
    configs = result["configs"]
    config_rows = [[key, str(configs["tutorial"][key]), str(configs["nerft"][key])] for key in configs["tutorial"]]
    return "\n".join(
        [
            f"machine: {machine_line(result['machine'])}",
            f"model: {result['model']}" + (f" (random, {result['shape']} shape)" if result["shape"] else ""),
            "",
            format_table(["run", "steps", "rows/step", "samples/row", "samples", "seconds", "samples/s"], rows),
            "",
            format_table(["setting", "tutorial", "nerft"], config_rows),
            *result["report"],
            "",
            f"nerft / tutorial training samples per second: {result['speedup']:.2f}x (target {TARGET}x)",
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    needed = [args.train, args.dev] + ([args.model] if args.model else [args.tokenizer])
    for path in needed:
        if not path.exists():
            print(f"bench_train: error: {path}: not found", file=sys.stderr)
            return 1
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        result = run(args, args.work.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="nerft-bench-train-") as folder:
            result = run(args, Path(folder))
    from benchlib.report import json_text

    print(json_text(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
