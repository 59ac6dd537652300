"""Peak-memory measurement of a child process, synthetic data, and the prepare benchmark on small files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib.machine import machine_line
from benchlib.memory import measure_call
from benchlib.synthetic import synthetic_records, write_synthetic_cluener
from conftest import load_script

from nerft.data.load import load_records
from nerft.errors import NerftError
from nerft.machine import lscpu_fields

ROOT = Path(__file__).resolve().parents[1]
BASE = [
    {"text": "浙商银行企业", "label": {"company": {"浙商银行": [[0, 3]]}}},
    {"text": "在北京", "label": {"address": {"北京": [[1, 2]]}}},
]


def test_synthetic_records_cycle_through_the_base_with_unique_texts():
    rows = list(synthetic_records(BASE, 5))
    assert [row["text"] for row in rows] == [
        "浙商银行企业（0）",
        "在北京（1）",
        "浙商银行企业（2）",
        "在北京（3）",
        "浙商银行企业（4）",
    ]
    assert [row["label"] for row in rows] == [BASE[0]["label"], BASE[1]["label"]] * 2 + [BASE[0]["label"]]


def test_synthetic_files_stay_valid_clue_ner(tmp_path):
    path = write_synthetic_cluener(tmp_path / "big.jsonl", BASE, 7)
    records = load_records(path)
    assert len(records) == 7
    assert [(e.label, e.text, e.start, e.end) for e in records[3].entities] == [("address", "北京", 1, 2)]


def test_peak_memory_is_measured_per_child():
    # A 200 MiB allocation first, then a tiny one: each child reports its own peak, so the second
    # is not masked by the first (as getrusage(RUSAGE_CHILDREN) would be).
    big = measure_call("secrets:token_bytes", nbytes=200 * 2**20)
    small = measure_call("secrets:token_bytes", nbytes=1024)
    assert big.peak_reset and small.peak_reset  # Linux: the peak starts from the RSS after imports
    assert 195 <= big.growth_mib < 210  # 200 MiB, less what freed heap pages absorb
    assert small.growth_mib < 1
    assert big.peak_rss_bytes - small.peak_rss_bytes >= 195 * 2**20
    assert small.baseline_rss_bytes > 0 and small.seconds >= 0


def test_measure_call_fails_when_the_child_fails():
    with pytest.raises(NerftError, match="measuring json:loads failed"):
        measure_call("json:loads", s="{not json")


def test_lscpu_fields():
    fields = lscpu_fields("Architecture:   x86_64\nModel name:     AMD EPYC\nFlags: a b: c\n")
    assert fields == {"Architecture": "x86_64", "Model name": "AMD EPYC", "Flags": "a b: c"}
    machine = {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 23.5, "gpus": []}
    assert machine_line(machine) == "AMD EPYC, 2 cores, 23.5 GiB RAM, no GPU"
    assert machine_line({**machine, "gpus": ["NVIDIA H100, 81559 MiB"]}).endswith("GPU: NVIDIA H100, 81559 MiB")


def test_bench_prepare_script_on_sample_data(sample_dir, tmp_path, capsys):
    script = load_script("bench_prepare")
    code = script.main(
        [
            "--train",
            str(sample_dir / "train.jsonl"),
            "--small",
            "200",
            "--large",
            "2000",
            "--tmp",
            str(tmp_path),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == result["throughput"]["records"] == 32
    runs = result["memory"]["runs"]
    assert set(runs) == {"200", "2000"}
    assert result["memory"]["peak_ratio"] == pytest.approx(
        runs["2000"]["peak_rss_mib"] / runs["200"]["peak_rss_mib"], abs=1e-3
    )
    assert result["memory"]["passes"] and code == 0
    assert list(tmp_path.iterdir()) == []  # the synthetic files and outputs are gone
