"""Distributed training for real on this CPU: `.venv/bin/nerft train` run as a user runs it (the
venv not on PATH), LLaMA-Factory's torchrun launch with real DDP processes over gloo, a few steps
of the quick-start preset each.

- two processes on one machine (`--nproc-per-node 2`), then `--resume` of that run;
- two "nodes" on loopback: two nerft processes started together with `--nnodes 2 --node-rank 0|1
  --master-addr 127.0.0.1 --master-port FREE` and no `--nproc-per-node` (one CPU process each).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
NERFT = Path(sys.executable).parent / "nerft"  # the console script of this environment, e.g. .venv/bin/nerft
FEW_STEPS = [
    "--set",
    "train.max_steps=4",
    "--set",
    "output.save_steps=4",
    "--set",
    "output.logging_steps=1",
    "--set",
    "eval.eval_strategy=no",
]


def user_environment(tmp_path_factory, **extra) -> dict[str, str]:
    """The environment of a user who runs `.venv/bin/nerft` without activating the venv."""
    bare_path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if Path(entry) != NERFT.parent
    )
    env = {**os.environ, "PATH": bare_path, "NERFT_CACHE": str(tmp_path_factory.getbasetemp() / "nerft-cache"), **extra}
    env.pop("VIRTUAL_ENV", None)
    return env


def nerft(*args, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(NERFT), *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    env = user_environment(tmp_path_factory)
    assert not any(
        (Path(entry) / "torchrun").is_file() for entry in env["PATH"].split(os.pathsep) if entry == str(NERFT.parent)
    )
    return run, env, nerft("train", "tiny-cpu", "-o", run, "--nproc-per-node", "2", *FEW_STEPS, env=env)


def test_two_ddp_processes_train_on_one_cpu_machine(two_processes):
    run, _, result = two_processes
    assert result.returncode == 0, result.stderr[-3000:]
    # LLaMA-Factory's torchrun launch, found in nerft's own environment though it is not on PATH
    assert "FORCE_TORCHRUN=1 NNODES=1 NODE_RANK=0 NPROC_PER_NODE=2 ACCELERATE_TORCH_DEVICE=cpu " in result.stderr
    assert "Initializing 2 distributed tasks at: 127.0.0.1:" in result.stderr
    for rank in (0, 1):
        assert f"Process rank: {rank}, world size: 2, device: cpu, distributed training: True" in result.stderr
    assert "Total train batch size (w. parallel, distributed & accumulation) = 2" in result.stderr
    assert (
        "launch       torchrun, 2 processes per node x 1 node (world size 2; CPU processes, gloo), this is node 0"
        in result.stdout
    )
    assert result.stdout.splitlines()[1].startswith("steps        4/4 ")
    assert (run / "model.safetensors").is_file() and (run / "checkpoint-4").is_dir() and (run / "run.json").is_file()


def test_resume_of_a_two_process_run(two_processes, tmp_path):
    import shutil

    run, env, first = two_processes
    assert first.returncode == 0, first.stderr[-3000:]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = nerft(
        "train",
        "tiny-cpu",
        "-o",
        copy,
        "--resume",
        "--nproc-per-node",
        "2",
        *FEW_STEPS,
        "--set",
        "train.max_steps=6",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resume_from_checkpoint: {copy / 'checkpoint-4'}" in (copy / "llamafactory_train.yaml").read_text()
    # the optimizer state loaded too (with accelerate's device `cpu:0` torch refused to map it)
    assert (
        "Resuming training from checkpoint with epoch 0 and global step 4" in result.stderr
        and "world size: 2" in result.stderr
    )
    assert result.stdout.splitlines()[1].startswith("steps        6/6 ")
    assert (copy / "checkpoint-6").is_dir()


def test_two_nodes_on_loopback_without_nproc_per_node(tmp_path_factory):
    work = tmp_path_factory.mktemp("nodes")
    port = free_port()
    children = []
    for rank in (0, 1):
        # each "machine" its own run folder and datasets cache, as two hosts would have
        env = user_environment(tmp_path_factory, HF_DATASETS_CACHE=str(work / f"datasets-{rank}"))
        argv = [
            str(NERFT),
            "train",
            "tiny-cpu",
            "-o",
            str(work / f"node{rank}"),
            *FEW_STEPS,
            "--nnodes",
            "2",
            "--node-rank",
            str(rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
        ]
        children.append(
            subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    try:
        for child in children:
            outputs.append(child.communicate(timeout=600))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    (out0, err0), (out1, err1) = outputs
    assert [child.returncode for child in children] == [0, 0], (err0[-2000:], err1[-2000:])
    for rank, err in enumerate((err0, err1)):
        assert (
            f"FORCE_TORCHRUN=1 NNODES=2 NODE_RANK={rank} NPROC_PER_NODE=1 ACCELERATE_TORCH_DEVICE=cpu MASTER_ADDR=127.0.0.1 MASTER_PORT={port} "
            in err
        )
    assert "Process rank: 0, world size: 2" in err0 and "Process rank: 1, world size: 2" in err1
    # node 0 saved the model and wrote the run's manifest; node 1 holds only what it was given
    assert (work / "node0" / "model.safetensors").is_file() and (work / "node0" / "run.json").is_file()
    assert out0.splitlines()[1].startswith("steps        4/4 ")
    assert not (work / "node1" / "model.safetensors").exists() and not (work / "node1" / "run.json").exists()
    assert out1.strip() == (
        "node 1 of 2 finished; the results (weights, checkpoints, logs, run.json) are on node 0 (127.0.0.1), in its run folder"
    )
