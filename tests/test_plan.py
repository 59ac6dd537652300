"""`RunPlan` is the one plan: `nerft doctor --config` and `nerft train --dry-run` print its figures."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.config.load import PRESETS_DIR
from nerft.training import kernels
from nerft.training.plan import can_run_here, plan_run, read_plan

PRESETS = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
CPU = kernels.Machine(cuda=False)


@pytest.fixture
def on_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "detect_machine", lambda: CPU)
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))


def dry_run(*args: str):
    result = CliRunner().invoke(app, ["train", *args, "--dry-run"])
    return result


@pytest.mark.parametrize("preset", PRESETS)
def test_doctor_and_dry_run_agree_on_every_figure(preset, on_cpu):
    result = dry_run(preset)
    assert result.exit_code == 0, result.output
    rendered = yaml.safe_load(result.stdout)
    read = read_plan(preset, machine=CPU)
    plan = read.settings
    doctor = {
        "cutoff_len": plan.cutoff_len,
        "per_device_train_batch_size": plan.per_device_train_batch_size,
        "finetuning_type": plan.finetuning_type,
        "quantization_bit": plan.quantization_bit,
        "flash_attn": plan.flash_attn,
        "bf16": plan.bf16,
        "fp16": plan.fp16,
        "enable_liger_kernel": plan.enable_liger_kernel,
        "packing": plan.packing,
        "gradient_checkpointing": plan.gradient_checkpointing,
    }
    train = {
        "cutoff_len": rendered["cutoff_len"],
        "per_device_train_batch_size": rendered["per_device_train_batch_size"],
        "finetuning_type": rendered["finetuning_type"],
        "quantization_bit": rendered.get("quantization_bit"),
        "flash_attn": rendered["flash_attn"],
        "bf16": rendered.get("bf16", False),
        "fp16": rendered.get("fp16", False),
        "enable_liger_kernel": rendered.get("enable_liger_kernel", False),
        "packing": bool(rendered.get("packing") or rendered.get("neat_packing")),
        "gradient_checkpointing": not rendered.get("disable_gradient_checkpointing", False),
    }
    assert doctor == train
    if plan.finetuning_type == "lora":
        assert (plan.lora_rank, plan.lora_target) == (rendered["lora_rank"], rendered["lora_target"])
    # the sizing note is the same sentence in both reports
    assert f"sequences    {read.sequence_note}" in result.stderr.splitlines()


@pytest.mark.parametrize("preset", PRESETS)
def test_doctor_fails_where_train_stops(preset, on_cpu):
    """One rule (`can_run_here`): what stops `nerft train` on a CPU is what the doctor fails."""
    blockers = can_run_here(read_plan(preset, machine=CPU), CPU)
    result = dry_run(preset)
    if blockers:
        assert f"note         on this machine training would stop here: {blockers[0].error()}" in result.stderr
    else:
        assert "would stop here" not in result.stderr
    # the presets for GPUs stop on a CPU, the CPU presets do not
    assert bool(blockers) == (preset not in ("tiny-cpu", "smollm2-cpu"))


def test_a_misspelt_section_is_refused_by_both(tmp_path, on_cpu):
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  model_name_or_path: nerft:tiny-qwen2\ntrian:\n  max_steps: 4\n", encoding="utf-8")
    result = dry_run(str(config))
    doctor = CliRunner().invoke(app, ["doctor", "--config", str(config)])
    assert (result.exit_code, doctor.exit_code) == (1, 1)
    assert "trian" in result.stderr and result.stderr == doctor.stderr
    assert result.stderr.startswith(f"{config}:3: trian: unknown section")


def test_cutoff_is_measured_on_the_data_by_both(on_cpu):
    # tiny-cpu packs data/sample: about 4 examples of mean length 63.0 tokens of the tiny tokenizer,
    # round_up(4 * 63.0 = 252) = 256; CLUENER's figures (53.2 mean) would have given 216
    job = plan_run("tiny-cpu").job
    assert job.sequences.cutoff_len == read_plan("tiny-cpu", machine=CPU).settings.cutoff_len == 256
    assert job.data.records == {"train": 32, "dev": 9}
    assert "tiny-qwen2's tokenizer" in job.sequences.note


def test_planning_writes_nothing(tmp_path, on_cpu):
    run_dir = tmp_path / "run"
    plan = plan_run("tiny-cpu", output_dir=run_dir).job
    assert plan.run_dir == run_dir and not run_dir.exists()
    assert plan.argv == ("llamafactory-cli", "train", str(run_dir / "llamafactory_train.yaml"))
    assert plan.args["output_dir"] == str(run_dir) and plan.args["dataset_dir"] == str(run_dir / "data")


def test_train_prepares_the_data_once(tmp_path, on_cpu, monkeypatch):
    """The plan validates and measures; train writes the prepared data once, without checking again."""
    from conftest import FakeLauncher

    from nerft.data import prepare
    from nerft.training import plan

    calls = []
    real = prepare.check_inputs
    for module in (prepare, plan):  # the plan's check, and prepare's own when it is not handed one
        monkeypatch.setattr(module, "check_inputs", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr("nerft.process.run_program", FakeLauncher())
    result = CliRunner().invoke(app, ["train", "tiny-cpu", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert (tmp_path / "run" / "data" / "cluener_train.json").is_file()


def test_bf16_is_one_rule():
    # compute capability 8.0 and newer, as torch.cuda.is_bf16_supported and the doctor both said in other words
    assert (
        kernels.supports_bf16([(8, 0), (9, 0)])
        and not kernels.supports_bf16([(8, 0), (7, 5)])
        and not kernels.supports_bf16([])
    )
    assert kernels.parse_capability("8.6") == (8, 6) and kernels.parse_capability(None) is None
