"""The command line and environment `nerft train` starts `llamafactory-cli train` with, on one GPU,
several GPUs and several machines (LLaMA-Factory's torchrun launch), without launching anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import FakeLauncher
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.config.schema import LaunchSection
from nerft.errors import ConfigError
from nerft.training import kernels
from nerft.training.launch import (
    deepspeed_config_path,
    describe_launch,
    launch_environment,
    train_command,
)

ROOT = Path(__file__).resolve().parent.parent
A100S = kernels.Machine(
    cuda=True, gpu_count=8, bf16=True, gpu_name="NVIDIA A100-SXM4-40GB", packages=frozenset(kernels.KERNEL_MODULES)
)


pytestmark = pytest.mark.usefixtures("session_cache")


def test_one_gpu_adds_nothing_to_the_environment():
    assert train_command("/runs/a/llamafactory_train.yaml", LaunchSection()) == (
        ["llamafactory-cli", "train", "/runs/a/llamafactory_train.yaml"],
        {},
    )


def test_several_gpus_force_torchrun_with_their_count():
    argv, env = train_command("/runs/a/llamafactory_train.yaml", LaunchSection(nproc_per_node=4))
    assert argv == ["llamafactory-cli", "train", "/runs/a/llamafactory_train.yaml"]
    assert env == {"FORCE_TORCHRUN": "1", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "4"}


def test_multi_node_sets_every_torchrun_variable():
    launch = LaunchSection(nnodes=2, node_rank=1, nproc_per_node=8, master_addr="10.0.0.1", master_port=29500)
    assert launch_environment(launch) == {
        "FORCE_TORCHRUN": "1",
        "NNODES": "2",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "8",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }


def test_deepspeed_forces_torchrun_even_on_one_gpu():
    assert launch_environment(LaunchSection(), deepspeed=True, gpu_count=1) == {
        "FORCE_TORCHRUN": "1",
        "NNODES": "1",
        "NODE_RANK": "0",
        "NPROC_PER_NODE": "1",
    }


def test_nodes_without_a_process_count_get_one_per_visible_gpu_else_one_cpu_process():
    # LLaMA-Factory's own default is its device count: 0 without GPUs, which torchrun refuses.
    nodes = LaunchSection(nnodes=2, node_rank=1, master_addr="127.0.0.1", master_port=29500)
    assert launch_environment(nodes)["NPROC_PER_NODE"] == "1"
    assert launch_environment(nodes, gpu_count=8)["NPROC_PER_NODE"] == "8"
    assert launch_environment(LaunchSection(nproc_per_node=2), gpu_count=8)["NPROC_PER_NODE"] == "2"
    assert launch_environment(LaunchSection(force_torchrun=True))["NPROC_PER_NODE"] == "1"


def test_cpu_processes_get_the_plain_cpu_device():
    # accelerate's `cpu:0` made a resumed multi-process CPU run fail to load its optimizer state
    env = launch_environment(LaunchSection(nproc_per_node=2), cpu=True)
    assert env == {
        "FORCE_TORCHRUN": "1",
        "NNODES": "1",
        "NODE_RANK": "0",
        "NPROC_PER_NODE": "2",
        "ACCELERATE_TORCH_DEVICE": "cpu",
    }
    assert launch_environment(LaunchSection(), cpu=True) == {}  # one plain process: no torchrun, nothing to fix


def test_the_launch_is_described_with_its_world_size_and_backend():
    env = launch_environment(LaunchSection(nnodes=2, node_rank=1, master_addr="127.0.0.1", master_port=29500), cpu=True)
    assert (
        describe_launch(env)
        == "torchrun, 1 process per node x 2 nodes (world size 2; CPU processes, gloo), this is node 1"
    )
    env = launch_environment(LaunchSection(nproc_per_node=8), gpu_count=8)
    assert (
        describe_launch(env) == "torchrun, 8 processes per node x 1 node (world size 8; GPU processes), this is node 0"
    )


def test_distributed_launch_refuses_a_path_with_spaces():
    with pytest.raises(ConfigError, match="path with spaces"):
        train_command("/my runs/a/llamafactory_train.yaml", LaunchSection(force_torchrun=True))
    assert train_command("/my runs/a.yaml", LaunchSection())[1] == {}  # a plain launch keeps the argument whole
    # two visible GPUs: LLaMA-Factory starts torchrun by itself
    with pytest.raises(ConfigError, match="path with spaces"):
        train_command("/my runs/a.yaml", LaunchSection(), gpu_count=2)
    assert train_command("/my runs/a.yaml", LaunchSection(), gpu_count=1)[1] == {}


def test_deepspeed_presets_are_files_in_conf():
    assert deepspeed_config_path("zero2") == str((ROOT / "conf" / "ds_z2_config.json").resolve())
    assert deepspeed_config_path("zero3") == str((ROOT / "conf" / "ds_z3_config.json").resolve())
    for stage, name in ((2, "ds_z2_config.json"), (3, "ds_z3_config.json")):
        assert yaml.safe_load((ROOT / "conf" / name).read_text())["zero_optimization"]["stage"] == stage
    with pytest.raises(ConfigError, match="no such DeepSpeed config file"):
        deepspeed_config_path("zero4.json")


@pytest.mark.parametrize(
    ("requested", "machine", "expected"),
    [
        ("auto", A100S, ("fa2", "FlashAttention-2 is installed")),
        (
            "auto",
            kernels.Machine(cuda=True, gpu_count=1, bf16=True),
            ("sdpa", "flash-attn is not installed (pip install flash-attn)"),
        ),
        ("auto", kernels.Machine(cuda=False), ("sdpa", "no CUDA")),
        ("disabled", A100S, ("disabled", "set in the config")),
    ],
)
def test_attention_choice(requested, machine, expected):
    assert kernels.choose_attention(requested, machine) == expected


def test_liger_choice():
    assert kernels.choose_liger("auto", A100S) == (True, "liger-kernel is installed")
    assert kernels.choose_liger("auto", kernels.Machine(cuda=False))[0] is False
    assert kernels.choose_liger(False, A100S) == (False, "set in the config")


@pytest.fixture
def gpu_machine(monkeypatch):
    launcher = FakeLauncher()
    monkeypatch.setattr(kernels, "detect_machine", lambda: A100S)
    monkeypatch.setattr("nerft.process.run_program", launcher)
    return launcher


def test_cli_multi_node_launch_on_eight_gpus_with_zero3(gpu_machine, tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "tiny-cpu",
            "-o",
            str(run_dir),
            "--set",
            "train.bf16=true",
            "--nnodes",
            "2",
            "--node-rank",
            "0",
            "--nproc-per-node",
            "8",
            "--master-addr",
            "10.0.0.1",
            "--master-port",
            "29500",
            "--deepspeed",
            "zero3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert gpu_machine.calls == [
        (
            ["llamafactory-cli", "train", str(run_dir / "llamafactory_train.yaml")],
            {
                "FORCE_TORCHRUN": "1",
                "NNODES": "2",
                "NODE_RANK": "0",
                "NPROC_PER_NODE": "8",
                "MASTER_ADDR": "10.0.0.1",
                "MASTER_PORT": "29500",
            },
        )
    ]
    args = yaml.safe_load((run_dir / "llamafactory_train.yaml").read_text())
    assert args["deepspeed"] == str((ROOT / "conf" / "ds_z3_config.json").resolve())
    assert (args["flash_attn"], args["enable_liger_kernel"], args["bf16"]) == ("fa2", True, True)
    assert "attention    fa2 (FlashAttention-2 is installed)" in result.stdout
    saved = yaml.safe_load((run_dir / "nerft.yaml").read_text())
    assert saved["launch"] == {
        "nnodes": 2,
        "node_rank": 0,
        "nproc_per_node": 8,
        "master_addr": "10.0.0.1",
        "master_port": 29500,
        "force_torchrun": False,
    }


def test_cli_nodes_without_nproc_per_node_use_every_visible_gpu(gpu_machine, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            "tiny-cpu",
            "-o",
            str(tmp_path / "run"),
            "--set",
            "train.bf16=true",
            "--nnodes",
            "2",
            "--node-rank",
            "0",
            "--master-addr",
            "10.0.0.1",
            "--master-port",
            "29500",
        ],
    )
    assert result.exit_code == 0, result.output
    assert gpu_machine.calls[0][1]["NPROC_PER_NODE"] == "8"
    assert (
        "launch       torchrun, 8 processes per node x 2 nodes (world size 16; GPU processes), this is node 0"
        in result.stdout
    )


def test_an_explicit_ddp_backend_passes_the_pre_check_of_a_multi_process_launch(gpu_machine, tmp_path):
    # Parsed outside torchrun, ddp_backend made accelerate look for a process group: "Default
    # process group has not been initialized", although LLaMA-Factory runs it under torchrun.
    result = CliRunner().invoke(
        app,
        ["train", "tiny-cpu", "-o", str(tmp_path / "run"), "--set", "train.ddp_backend=gloo", "--nproc-per-node", "2"],
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "run" / "llamafactory_train.yaml").read_text())["ddp_backend"] == "gloo"
    result = CliRunner().invoke(
        app,
        ["train", "tiny-cpu", "-o", str(tmp_path / "run2"), "--set", "train.ddp_backend=glo", "--nproc-per-node", "2"],
    )
    assert result.exit_code == 1 and len(gpu_machine.calls) == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"nerft: error: {tmp_path / 'run2' / 'llamafactory_train.yaml'}: ddp_backend: 'glo' is not one of nccl, gloo, mpi, xccl, hccl, cncl, mccl"
    )


def test_cli_single_gpu_launch_adds_no_variables(gpu_machine, tmp_path):
    result = CliRunner().invoke(app, ["train", "tiny-cpu", "-o", str(tmp_path / "run"), "--set", "train.bf16=true"])
    assert result.exit_code == 0, result.output
    assert gpu_machine.calls == [(["llamafactory-cli", "train", str(tmp_path / "run" / "llamafactory_train.yaml")], {})]


def test_a_missing_package_is_reported_before_launch(monkeypatch, tmp_path):
    launcher = FakeLauncher()
    monkeypatch.setattr(kernels, "detect_machine", lambda: kernels.Machine(cuda=True, gpu_count=2, bf16=True))
    monkeypatch.setattr("nerft.process.run_program", launcher)
    result = CliRunner().invoke(app, ["train", "tiny-cpu", "-o", str(tmp_path / "run"), "--deepspeed", "zero2"])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == "nerft: error: this run needs deepspeed, which is not installed (pip install deepspeed)"
    )
    assert launcher.calls == [] and not (tmp_path / "run").exists()
