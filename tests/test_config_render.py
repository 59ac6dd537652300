"""Rendering LLaMA-Factory's YAML from a nerft config, and LLaMA-Factory's own parser accepting it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.config.load import load_config
from nerft.config.render import (
    Resolved,
    flatten,
    render_llamafactory_args,
    to_llamafactory_yaml,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


pytestmark = pytest.mark.usefixtures("session_cache")


def resolved(run_dir: Path, **changes) -> Resolved:
    values = {
        "run_dir": run_dir,
        "model_path": "/models/m",
        "dataset_dir": run_dir / "data",
        "dataset": "cluener_train",
        "eval_dataset": "cluener_dev",
        "cutoff_len": 256,
        "flash_attn": "sdpa",
        "enable_liger_kernel": False,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 1,
    }
    values.update(changes)
    return Resolved(**values)


def test_tiny_preset_renders_to_these_arguments(tmp_path):
    config = load_config("tiny-cpu").config
    sections = render_llamafactory_args(config, resolved(tmp_path))
    assert sections == {
        "model": {
            "model_name_or_path": "/models/m",
            "trust_remote_code": True,
            "flash_attn": "sdpa",
            "enable_liger_kernel": False,
        },
        "method": {"stage": "sft", "do_train": True, "finetuning_type": "full"},  # no lora_* keys for a full fine-tune
        "dataset": {
            "dataset_dir": str(tmp_path / "data"),
            "dataset": "cluener_train",
            "eval_dataset": "cluener_dev",
            "template": "qwen",
            "cutoff_len": 256,
            "neat_packing": True,
            "overwrite_cache": True,
            "preprocessing_num_workers": 1,
            "dataloader_num_workers": 0,
        },
        "output": {
            "output_dir": str(tmp_path),
            "logging_steps": 25,
            "save_steps": 250,
            "plot_loss": True,
            "save_only_model": False,
            "report_to": "none",
        },
        "train": {
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "learning_rate": 3.0e-3,
            "num_train_epochs": 3.0,
            "max_steps": 500,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.0,  # transformers 5: warmup_ratio's replacement takes a ratio below 1
            "bf16": False,
            "fp16": False,
        },
        "eval": {"per_device_eval_batch_size": 1, "eval_strategy": "steps", "eval_steps": 250},
    }


def test_no_eval_dataset_turns_evaluation_off(tmp_path):
    config = load_config("tiny-cpu").config
    sections = render_llamafactory_args(config, resolved(tmp_path, eval_dataset=None))
    assert sections["eval"] == {"eval_strategy": "no"}
    assert "eval_dataset" not in sections["dataset"]


def test_passthrough_keys_and_launch_values_are_rendered(tmp_path):
    config = load_config("qwen7b-qlora").config
    sections = render_llamafactory_args(
        config,
        resolved(
            tmp_path,
            flash_attn="fa2",
            enable_liger_kernel=True,
            deepspeed="/conf/ds.json",
            resume_from_checkpoint="/r/checkpoint-5",
        ),
    )
    assert sections["model"] == {
        "model_name_or_path": "/models/m",
        "trust_remote_code": True,
        "flash_attn": "fa2",
        "enable_liger_kernel": True,
        "quantization_bit": 4,
        "quantization_method": "bnb",
        "double_quantization": True,
        "upcast_layernorm": True,
    }
    assert sections["method"]["deepspeed"] == "/conf/ds.json"
    assert sections["train"]["resume_from_checkpoint"] == "/r/checkpoint-5"
    assert sections["train"]["ddp_timeout"] == 180000000


def test_yaml_layout_follows_llamafactory_examples():
    text = to_llamafactory_yaml(
        {"model": {"model_name_or_path": "m"}, "eval": {}, "train": {"bf16": True}}, header="made by nerft\nline two"
    )
    assert text == "# made by nerft\n# line two\n\n### model\nmodel_name_or_path: m\n\n### train\nbf16: true\n"


def dry_run(tmp_path_factory, preset: str):
    run_dir = tmp_path_factory.mktemp("dry") / preset
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERFT_CACHE", str(tmp_path_factory.getbasetemp() / "nerft-cache"))
        result = CliRunner().invoke(
            app,
            [
                "train",
                preset,
                "--dry-run",
                "-o",
                str(run_dir),
                "--set",
                f"data.train={SAMPLE / 'train.jsonl'}",
                "--set",
                f"data.dev={SAMPLE / 'dev.jsonl'}",
            ],
        )
    return result, run_dir


@pytest.fixture(scope="module")
def qwen7b_dry_run(tmp_path_factory):
    return dry_run(tmp_path_factory, "qwen7b")


def test_qwen7b_dry_run_prints_only_yaml_and_writes_nothing(qwen7b_dry_run):
    result, run_dir = qwen7b_dry_run
    assert result.exit_code == 0, result.output
    assert not run_dir.exists()
    args = yaml.safe_load(result.stdout)
    assert result.stdout.startswith("# Rendered by nerft")
    assert {
        key: args[key]
        for key in ("model_name_or_path", "template", "finetuning_type", "lora_target", "lora_rank", "stage")
    } == {
        "model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
        "template": "qwen",
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 8,
        "stage": "sft",
    }
    assert args["output_dir"] == str(run_dir) and args["dataset_dir"] == str(run_dir / "data")
    assert (args["dataset"], args["eval_dataset"]) == ("cluener_train", "cluener_dev")
    # neat packing: one pack per device, packs measured on the data (multiples of 8)
    assert (args["neat_packing"], args["per_device_train_batch_size"], args["cutoff_len"] % 8) == (True, 1, 0)
    assert "not on disk" in result.stderr and "upper bound from UTF-8 bytes" in result.stderr


def parse_with_llamafactory(args: dict):
    from unittest import mock

    import transformers.training_args
    from llamafactory.hparams.parser import _parse_train_args

    # The YAML is for a bf16 GPU: let transformers believe in one while it checks the arguments.
    with mock.patch.object(transformers.training_args, "is_torch_bf16_gpu_available", return_value=True):
        return _parse_train_args(args)


def test_qwen7b_dry_run_yaml_is_accepted_by_llamafactory_parser(qwen7b_dry_run):
    result, _ = qwen7b_dry_run
    model_args, data_args, training_args, finetuning_args, _ = parse_with_llamafactory(yaml.safe_load(result.stdout))
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert data_args.template == "qwen" and data_args.neat_packing and data_args.packing
    assert finetuning_args.finetuning_type == "lora" and finetuning_args.lora_target == ["all"]
    assert training_args.bf16 and training_args.gradient_accumulation_steps == 8
    assert model_args.disable_gradient_checkpointing is True


def test_qlora_dry_run_yaml_is_accepted_by_llamafactory_parser(tmp_path_factory):
    result, _ = dry_run(tmp_path_factory, "qwen7b-qlora")
    assert result.exit_code == 0, result.output
    model_args, _, training_args, finetuning_args, _ = parse_with_llamafactory(yaml.safe_load(result.stdout))
    assert (model_args.quantization_bit, model_args.quantization_method, model_args.double_quantization) == (
        4,
        "bnb",
        True,
    )
    assert model_args.upcast_layernorm and finetuning_args.finetuning_type == "lora" and training_args.bf16


@pytest.mark.parametrize(
    ("preset", "model", "template", "lr"),
    [
        ("qwen3-8b", "Qwen/Qwen3-8B", "qwen3_nothink", 1e-4),
        ("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", "qwen", 2e-4),
    ],
)
def test_the_smaller_and_qwen3_presets_dry_run_yaml_is_accepted_by_llamafactory_parser(
    tmp_path_factory, preset, model, template, lr
):
    result, run_dir = dry_run(tmp_path_factory, preset)
    assert result.exit_code == 0, result.output
    assert not run_dir.exists()
    model_args, data_args, training_args, finetuning_args, _ = parse_with_llamafactory(yaml.safe_load(result.stdout))
    assert (model_args.model_name_or_path, data_args.template) == (model, template)
    assert (
        finetuning_args.finetuning_type == "lora"
        and finetuning_args.lora_target == ["all"]
        and finetuning_args.lora_rank == 8
    )
    assert data_args.neat_packing and training_args.bf16 and training_args.learning_rate == lr
    assert training_args.gradient_accumulation_steps == 8 and model_args.disable_gradient_checkpointing is True


def test_an_argument_llamafactory_rejects_is_reported_before_launch(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "tiny-cpu", "--dry-run", "-o", str(tmp_path / "run"), "--set", "train.lr_scheduler_type=bogus"]
    )
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"nerft: error: {tmp_path / 'run' / 'llamafactory_train.yaml'}: LLaMA-Factory 0.9.5 rejects the rendered arguments: "
    )
    assert "bogus is not a valid SchedulerType" in last


def test_flatten_joins_sections(tmp_path):
    config = load_config("tiny-cpu").config
    flat = flatten(render_llamafactory_args(config, resolved(tmp_path)))
    assert flat["template"] == "qwen" and flat["output_dir"] == str(tmp_path) and len(flat) == 34


def test_qwen7b_dry_run_without_the_data_in_place_still_renders_the_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's data/cluener/*.json are relative: absent here
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["train", "qwen7b", "--dry-run"])
    assert result.exit_code == 0, result.output
    sections = yaml.safe_load(result.stdout)
    assert (sections["dataset"], sections["eval_dataset"]) == ("cluener_train", "cluener_dev")
    # Packed to hold ~4 CLUENER examples of 53.2 tokens (longest 138): round_up(4 * 53.2) = 216.
    assert sections["cutoff_len"] == 216
    assert "not found: sequences sized by CLUENER's lengths" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("preset", ["qwen7b", "qwen7b-qlora", "qwen3-8b", "qwen2.5-1.5b"])
def test_doctor_sizes_sequences_as_train_renders_them(preset, tmp_path, monkeypatch):
    from nerft.training.plan import read_plan

    monkeypatch.chdir(tmp_path)  # no data in place: train sizes by CLUENER's lengths, as the doctor does
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["train", preset, "--dry-run"])
    assert result.exit_code == 0, result.output
    rendered = yaml.safe_load(result.stdout)
    plan = read_plan(preset).settings
    assert (plan.cutoff_len, plan.per_device_train_batch_size, plan.packing) == (216, 1, True)
    assert (rendered["cutoff_len"], rendered["per_device_train_batch_size"], rendered["neat_packing"]) == (216, 1, True)


def test_dry_run_header_shows_the_exact_launch_with_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "qwen7b",
            "--dry-run",
            "-o",
            str(run_dir),
            "--nnodes",
            "2",
            "--node-rank",
            "1",
            "--master-addr",
            "10.0.0.1",
            "--master-port",
            "29500",
            "--nproc-per-node",
            "8",
            "--set",
            f"data.train={SAMPLE / 'train.jsonl'}",
            "--set",
            f"data.dev={SAMPLE / 'dev.jsonl'}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        "# Run: FORCE_TORCHRUN=1 NNODES=2 NODE_RANK=1 NPROC_PER_NODE=8 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 "
        f"llamafactory-cli train {run_dir / 'llamafactory_train.yaml'}"
    )
