"""`nerft doctor` end to end: for real on this machine, and on simulated ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_doctor import cpu_machine, machine
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.doctor import diagnosis as diagnose_module

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def real_run():
    """`nerft doctor --json` on this very machine (one snapshot for the module: torch imports once)."""
    result = runner.invoke(app, ["doctor", "--json"])
    return result


def test_doctor_runs_for_real_here(real_run):
    assert real_run.exit_code == 0, real_run.output
    report = json.loads(real_run.stdout)
    environment = report["environment"]
    import torch

    assert environment["torch_version"] == torch.__version__
    assert environment["torch_cuda_build"] == torch.version.cuda
    assert environment["packages"]["llamafactory"] == "0.9.5"
    names = {check["name"]: check["status"] for check in report["checks"]}
    assert names["torchvision"] == "ok" and names["transformers"] == "ok"
    assert report["errors"] == 0 and report["ok"] is True


def test_doctor_text_report_ends_with_the_tally(monkeypatch):
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: cpu_machine())
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "ℹ gpu           no NVIDIA GPU (nvidia-smi not found)" in result.stdout
    # python, torchvision, torchaudio, 8 tested packages, 1 cache disk; the rest is information
    assert result.stdout.rstrip().splitlines()[-1] == "12 passed / 0 warnings / 0 errors"


def test_doctor_exits_1_on_the_cuda_driver_trap(monkeypatch):
    monkeypatch.setattr(
        diagnose_module, "take_snapshot", lambda: machine(driver_cuda="12.2", torch_cuda_available=False)
    )
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert (
        "fix: pip install torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 --index-url https://download.pytorch.org/whl/cu126"
        in result.stdout
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_doctor_config_7b_fails_on_a_cpu_machine_naming_the_missing_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: cpu_machine())
    config = write(
        tmp_path / "qwen7b.yaml",
        "data:\n  train: data/sample/train.jsonl\n"
        "model:\n  model_name_or_path: Qwen/Qwen2.5-7B-Instruct\ntrain:\n  bf16: true\n"
        "  per_device_train_batch_size: 1\ndataset:\n  cutoff_len: 1024\n",
    )
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 1
    assert (
        "✘ memory        needs an NVIDIA GPU with at least 19.7 GiB; this machine has no NVIDIA GPU (nvidia-smi not found)"
        in result.stdout
    )
    assert result.stdout.rstrip().endswith(f"{config}: cannot run on this machine")


def test_doctor_config_7b_passes_on_a_simulated_h100(tmp_path, monkeypatch):
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: machine())
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))
    config = write(
        tmp_path / "qwen7b.yaml",
        "model_name_or_path: Qwen/Qwen2.5-7B-Instruct\nbf16: true\ncutoff_len: 1024\nper_device_train_batch_size: 1\n",
    )
    result = runner.invoke(app, ["doctor", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"]["estimate"]["device"] == "gpu"
    assert report["config"]["estimate"]["trainable_params"] == 20_185_088
    statuses = {check["name"]: (check["status"], check["fix"]) for check in report["config"]["checks"]}
    assert statuses == {
        "model": ("warn", "nerft download Qwen/Qwen2.5-7B-Instruct"),  # not in nerft's model cache
        "precision": ("ok", None),
        "memory": ("ok", None),
    }


def test_doctor_config_tiny_passes_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: cpu_machine())
    config = write(
        tmp_path / "tiny.yaml",
        "data:\n  train: data/sample/train.jsonl\nmodel:\n  model_name_or_path: nerft:tiny-qwen2\n",
    )
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 0, result.output
    # the sample's 32 train sentences measured through the tiny model's tokenizer, as `nerft train`
    # sizes them: the longest example is 80 tokens (a multiple of 8 already)
    assert "batch           4 sequences of 80 tokens (cutoff_len: auto, sized as nerft train sizes it)" in result.stdout
    assert result.stdout.rstrip().endswith(f"{config}: can run on this machine")


def test_doctor_missing_config_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["doctor", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"nerft: error: {tmp_path / 'absent.yaml'}: no such config file (give a YAML file, or a preset: qwen2.5-1.5b, qwen3-8b, qwen7b, qwen7b-qlora, tiny-cpu)"
    )
    assert result.stdout == ""


# --- the presets in conf/ --------------------------------------------------------------------------


def test_tiny_cpu_preset_passes_for_real_here():
    result = runner.invoke(app, ["doctor", "--config", str(ROOT / "conf" / "tiny-cpu.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("tiny-cpu.yaml: can run on this machine")


def test_qwen7b_preset_fails_on_a_cpu_machine_naming_the_missing_gpu(monkeypatch):
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: cpu_machine())
    result = runner.invoke(app, ["doctor", "--config", str(ROOT / "conf" / "qwen7b.yaml")])
    assert result.exit_code == 1
    assert (
        "✘ precision     train.bf16 is true but this machine has no CUDA GPU: LLaMA-Factory cannot train in bf16 on a CPU; "
        "this machine has no NVIDIA GPU (nvidia-smi not found)"
    ) in result.stdout
    # one pack of 216 tokens (as `nerft train` renders it): activations and logits scale with the
    # tokens, 216 / 576 of the 2.95 + 1.14 GiB that 4 x 144 tokens needed: 18.7 GiB in all
    assert (
        "✘ memory        needs an NVIDIA GPU with at least 18.7 GiB; this machine has no NVIDIA GPU (nvidia-smi not found)"
        in result.stdout
    )


def test_qwen7b_presets_fit_the_gpus_they_are_written_for(monkeypatch):
    """qwen7b.yaml says one 40 GB A100; qwen7b-qlora.yaml one 24 GB GPU (with bitsandbytes)."""
    from dataclasses import replace

    from test_doctor import GOOD_PACKAGES, RTX4090

    a100 = replace(
        RTX4090, name="NVIDIA A100-SXM4-40GB", memory_total_mib=40960, memory_free_mib=40000, compute_capability="8.0"
    )
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: machine(gpus=[a100]))
    result = runner.invoke(app, ["doctor", "--config", str(ROOT / "conf" / "qwen7b.yaml"), "--json"])
    assert by_name_status(result, "memory") == "ok"
    with_bnb = machine(
        gpus=[RTX4090], packages={**GOOD_PACKAGES, "bitsandbytes": "0.45.0"}, modules={"bitsandbytes": True}
    )
    monkeypatch.setattr(diagnose_module, "take_snapshot", lambda: with_bnb)
    result = runner.invoke(app, ["doctor", "--config", str(ROOT / "conf" / "qwen7b-qlora.yaml"), "--json"])
    assert by_name_status(result, "memory") == "ok" and by_name_status(result, "quantization") == "ok"


def by_name_status(result, name: str) -> str:
    checks = json.loads(result.stdout)["config"]["checks"]
    return next(check["status"] for check in checks if check["name"] == name)
