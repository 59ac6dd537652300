"""The training benchmark: the two configs it compares, how it counts samples, and one real CPU run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib.training import TUTORIAL_TRAIN_ARGS, nerft_overrides, samples_per_row, throughput, tutorial_train_args
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_args_are_the_tutorials_yaml(shared_dir):
    # Every value the benchmark keeps from the tutorial is written in the tutorial itself.
    tutorial = (shared_dir / "seeds" / "001_77cb33fda5035036.txt").read_text(encoding="utf-8")
    for key, value in TUTORIAL_TRAIN_ARGS.items():
        if key == "report_to":  # not in the tutorial: keeps the run offline
            continue
        written = {True: "true", False: "false"}.get(value, value)
        written = {1.0e-4: "1.0e-4", 3.0: "3.0"}.get(written, written)
        assert f"\n{key}: {written}" in tutorial, key


def test_tutorial_args_for_a_throughput_run():
    args = tutorial_train_args(
        model="/m", dataset_dir="/d", dataset="cluener_train", output_dir="/o", max_steps=5, bf16=False, workers=0
    )
    assert (args["model_name_or_path"], args["dataset_dir"], args["dataset"], args["output_dir"]) == (
        "/m",
        "/d",
        "cluener_train",
        "/o",
    )
    assert (args["max_steps"], args["eval_strategy"], args["bf16"]) == (5, "no", False)
    assert (args["preprocessing_num_workers"], args["dataloader_num_workers"]) == (1, 0)
    assert (args["cutoff_len"], args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (
        1024,
        4,
        8,
    )
    assert "packing" not in args and "neat_packing" not in args


def test_nerft_overrides():
    assert nerft_overrides(model="/m", train="/t.jsonl", dev="/d.jsonl", max_steps=3, bf16=False, workers=2) == [
        "model.model_name_or_path=/m",
        "data.train=/t.jsonl",
        "data.dev=/d.jsonl",
        "train.max_steps=3",
        "eval.eval_strategy=no",
        "train.bf16=false",
        "dataset.preprocessing_num_workers=2",
        "dataset.dataloader_num_workers=2",
    ]


def test_samples_are_counted_per_packed_row():
    # Packed into rows of 1024 (capacity 1023): [600, 300, 100] and [500, 200] -> 5 samples in 2 rows.
    lengths = [600, 500, 300, 200, 100]
    assert samples_per_row(lengths, {"neat_packing": True, "cutoff_len": 1024}) == 2.5
    assert samples_per_row(lengths, {"cutoff_len": 1024}) == 1.0
    packed = throughput(
        "nerft", {"max_steps": 10, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8}, 20.0, 2.5
    )
    # 10 steps x 8 rows x 2.5 samples = 200 samples in 20 s
    assert (packed.samples, packed.samples_per_second) == (200.0, 10.0)
    plain = throughput(
        "tutorial", {"max_steps": 10, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 8}, 64.0
    )
    assert (plain.rows_per_step, plain.samples, plain.samples_per_second) == (32, 320.0, 5.0)


@pytest.mark.slow
def test_bench_train_script_runs_both_configs_on_the_tiny_model(tiny_model, sample_dir, tmp_path, capsys):
    script = load_script("bench_train")
    argv = [
        "--model",
        str(tiny_model),
        "--train",
        str(sample_dir / "train.jsonl"),
        "--dev",
        str(sample_dir / "dev.jsonl"),
        "--steps",
        "1",
        "--workers",
        "0",
        "--work",
        str(tmp_path),
        "--json",
    ]
    assert script.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    tutorial, nerft = result["runs"]
    assert (tutorial["name"], tutorial["steps"], tutorial["rows_per_step"], tutorial["samples_per_row"]) == (
        "tutorial",
        1,
        32,
        1.0,
    )
    assert nerft["name"] == "nerft" and nerft["steps"] == 1
    configs = result["configs"]
    assert configs["tutorial"]["cutoff_len"] == 1024 and configs["tutorial"]["neat_packing"] is None
    assert configs["nerft"]["neat_packing"] is True and configs["nerft"]["cutoff_len"] < 1024
    assert nerft["samples_per_row"] > 1  # packs of several compact samples
    assert result["speedup"] == pytest.approx(nerft["samples_per_second"] / tutorial["samples_per_second"], rel=1e-2)
    assert (tmp_path / "tutorial" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "nerft" / "run.json").is_file()
