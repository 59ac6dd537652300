"""How `llamafactory-cli` is started: argument list and environment, as pure functions.

LLaMA-Factory launches distributed training itself (llamafactory/launcher.py): when
FORCE_TORCHRUN is set, or more than one GPU is visible, `llamafactory-cli train` re-runs itself
under `torchrun --nnodes $NNODES --node_rank $NODE_RANK --nproc_per_node $NPROC_PER_NODE
--master_addr $MASTER_ADDR --master_port $MASTER_PORT`. So nerft never calls torchrun: it sets
those variables, and the same command line serves one GPU, several GPUs and several machines.
DeepSpeed needs that torchrun launch (LLaMA-Factory refuses it otherwise), so it forces it too.

Run the same `nerft train` on every node, changing only `--node-rank`.

LLaMA-Factory's default process count is its device count, which is 0 on a machine without
GPUs (torchrun then refuses `--nproc_per_node 0`). nerft always sets NPROC_PER_NODE for a
distributed launch: `--nproc-per-node` when given, else one process per visible GPU, else one
CPU process per node. On a CPU, torch.distributed runs over gloo (accelerate's choice without
CUDA), so several CPU processes or machines train together exactly as GPUs would.

On a CPU nerft also sets ACCELERATE_TORCH_DEVICE=cpu: accelerate 1.11 otherwise gives each CPU
process the device `cpu:0`, and transformers' Trainer loads a checkpoint's optimizer state with
`map_location=args.device` when the world size is above 1, which torch refuses ("don't know how
to restore data location ... (tagged with cpu:0)"): `--resume` of a CPU multi-process run failed.
"""

from __future__ import annotations

from pathlib import Path

from nerft.config.llamafactory_args import LLAMAFACTORY_CLI
from nerft.config.load import PRESETS_DIR
from nerft.config.schema import DEEPSPEED_PRESETS, LaunchSection
from nerft.errors import ConfigError

DEEPSPEED_FILES = {"zero2": "ds_z2_config.json", "zero3": "ds_z3_config.json"}


def deepspeed_config_path(value: str | None) -> str | None:
    """`zero2`/`zero3` name nerft's DeepSpeed files in conf/; anything else is a path to a JSON file."""
    if value is None:
        return None
    path = PRESETS_DIR / DEEPSPEED_FILES[value] if value in DEEPSPEED_PRESETS else Path(value)
    if not path.is_file():
        raise ConfigError(
            f"method.deepspeed: {path}: no such DeepSpeed config file", hint="use zero2, zero3 or a JSON path"
        )
    return str(path.resolve())


def processes_per_node(launch: LaunchSection, *, gpu_count: int = 0) -> int:
    """Training processes on this node: as asked, else one per visible GPU, else one (a CPU)."""
    return launch.nproc_per_node or gpu_count or 1


def launch_environment(
    launch: LaunchSection, *, deepspeed: bool = False, gpu_count: int = 0, cpu: bool = False
) -> dict[str, str]:
    """The variables added to the environment of `llamafactory-cli train` (`gpu_count` GPUs visible;
    `cpu`: the processes train on this machine's CPU)."""
    distributed = launch.force_torchrun or deepspeed or launch.nnodes > 1 or (launch.nproc_per_node or 1) > 1
    if not distributed:
        return {}
    env = {
        "FORCE_TORCHRUN": "1",
        "NNODES": str(launch.nnodes),
        "NODE_RANK": str(launch.node_rank),
        "NPROC_PER_NODE": str(processes_per_node(launch, gpu_count=gpu_count)),
    }
    if cpu:
        env["ACCELERATE_TORCH_DEVICE"] = "cpu"
    if launch.master_addr is not None:
        env["MASTER_ADDR"] = launch.master_addr
    if launch.master_port is not None:
        env["MASTER_PORT"] = str(launch.master_port)
    return env


def describe_launch(env: dict[str, str]) -> str:
    """The distributed launch `env` asks for, in words, for the report at launch."""
    per_node, nodes = int(env["NPROC_PER_NODE"]), int(env["NNODES"])
    backend = "CPU processes, gloo" if env.get("ACCELERATE_TORCH_DEVICE") == "cpu" else "GPU processes"
    return (
        f"torchrun, {per_node} process{'es' if per_node > 1 else ''} per node x {nodes} node{'s' if nodes > 1 else ''} "
        f"(world size {per_node * nodes}; {backend}), this is node {env['NODE_RANK']}"
    )


def train_command(
    train_yaml: str | Path, launch: LaunchSection, *, deepspeed: bool = False, gpu_count: int = 0, cpu: bool = False
) -> tuple[list[str], dict[str, str]]:
    """(argv, added environment) that start training on this node (`gpu_count` GPUs visible)."""
    env = launch_environment(launch, deepspeed=deepspeed, gpu_count=gpu_count, cpu=cpu)
    # LLaMA-Factory launches torchrun when asked or by itself on more than one visible GPU, and
    # builds that command with str.split(): a space would cut the path.
    if (env or gpu_count > 1) and any(char.isspace() for char in str(train_yaml)):
        raise ConfigError(
            f"{train_yaml}: distributed launch cannot take a path with spaces; choose another --output-dir"
        )
    return [LLAMAFACTORY_CLI, "train", str(train_yaml)], env


def export_command(export_yaml: str | Path) -> list[str]:
    return [LLAMAFACTORY_CLI, "export", str(export_yaml)]
