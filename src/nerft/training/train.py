"""`nerft train`: config -> prepared data -> rendered LLaMA-Factory YAML -> `llamafactory-cli train`.

Everything a mistake can be caught in is checked before LLaMA-Factory starts loading a model: the
config (schema, unknown keys), the run folder (non-empty without --resume/--force), the data
(`nerft prepare`'s validation), the model (on disk?), the machine (bf16 without CUDA, missing
packages) and the rendered arguments (the installed LLaMA-Factory's own parser).

The run folder is LLaMA-Factory's `output_dir` and ends up holding
`nerft.yaml` (the resolved config), `llamafactory_train.yaml` (what ran), `data/` (the prepared
datasets), LLaMA-Factory's outputs (adapter at the top, `checkpoint-*/`, logs, loss plot) and,
after a successful run, `run.json` (`nerft.runfolder.RunInfo`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nerft import __version__, process
from nerft.config.load import LoadedConfig, config_to_dict, load_config, resolve_paths
from nerft.config.schema import NerftConfig
from nerft.errors import ConfigError, DataError
from nerft.io import write_text_atomic
from nerft.runfolder import (
    RUN_CONFIG,
    RunFolder,
    RunInfo,
    write_run,
)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainResult:
    exit_code: int
    run_dir: Path
    rendered_yaml: str
    report: list[str] = field(default_factory=list)  # choices nerft made, for the summary
    summary: object | None = None  # TrainSummary after a successful run on node 0
    worker_note: str | None = None  # instead of a summary on a worker node (rank != 0)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint-N folder with the highest N (as transformers' get_last_checkpoint)."""
    if not run_dir.is_dir():
        return None
    found = [
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if path.is_dir() and (match := CHECKPOINT.match(path.name))
    ]
    return max(found)[1] if found else None


def is_run_folder(path: Path) -> bool:
    return RunFolder(path).is_run()


def check_run_folder(run_dir: Path, *, resume: bool, force: bool, node_rank: int = 0) -> Path | None:
    """Refuse to train over an existing run unless asked; return the checkpoint to resume from."""
    if resume and force:
        raise ConfigError("--resume and --force contradict each other: continue the run, or start it over")
    occupied = run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            hint = "train without --resume"
            if node_rank > 0:
                # Every process loads the checkpoint, but only node 0 saves one.
                hint = "a worker node resumes from node 0's checkpoint: share the run folder, or copy node 0's checkpoint-N here"
            raise ConfigError(f"{run_dir}: no checkpoint-* folder to resume from", hint=hint)
        return checkpoint
    if not occupied:
        return None
    if not force:
        raise ConfigError(
            f"{run_dir} is not empty",
            hint="--resume continues from its latest checkpoint, --force deletes it and starts over, or choose another --output-dir",
        )
    if not run_dir.is_dir() or not is_run_folder(run_dir):
        raise ConfigError(
            f"{run_dir} is not a nerft run folder (no {RUN_CONFIG}): nerft will not delete it; remove it yourself"
        )
    return None


def train(
    config: str | Path,
    *,
    output_dir: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    dry_run: bool = False,
    resume: bool = False,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or with `dry_run`, only plan) a run; `TrainResult.exit_code` is `llamafactory-cli`'s."""
    from nerft.config.llamafactory_args import INSTALL_HINT
    from nerft.training.plan import can_run_here, default_run_dir, plan_run

    loaded = load_config(config, overrides=list(overrides))
    run_dir = Path(output_dir or default_run_dir(loaded)).expanduser().resolve()
    checkpoint = None
    if not dry_run:
        from nerft.models.download import require_model

        checkpoint = check_run_folder(run_dir, resume=resume, force=force, node_rank=loaded.config.launch.node_rank)
        require_model(resolve_paths(loaded.config).model.model_name_or_path)  # on disk, or how to get it
    plan = plan_run(loaded, overrides, output_dir=run_dir, checkpoint=checkpoint)
    blockers = can_run_here(plan, plan.machine)
    if not dry_run and plan.missing_data:
        raise DataError(f"{plan.missing_data[0]}: no such file")
    if blockers and not dry_run:
        raise blockers[0].error()
    for line in plan.notes + plan.report:
        log(line)
    rendered = plan.rendered_yaml()
    if dry_run:
        if blockers:
            # a dry run shows the YAML for the GPU the config is written for
            log(f"note         on this machine training would stop here: {blockers[0].error()}")
        return TrainResult(0, run_dir, rendered, plan.report)

    cfg, data = plan.config, plan.data
    prepared_here = cfg.data.train is not None
    if prepared_here and not data.dataset_dir.resolve().is_relative_to(run_dir):
        from nerft.data.prepare import read_dataset_info

        read_dataset_info(data.dataset_dir)  # a broken one outside the run is refused before --force deletes anything
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if prepared_here:
        _prepare_data(plan)
    write_text_atomic(run_dir / RUN_CONFIG, _nerft_yaml(cfg, loaded, overrides))
    write_text_atomic(plan.train_yaml, rendered)
    code = process.run_program(plan.argv, env=plan.env, install_hint=INSTALL_HINT, stdout_to_stderr=True)
    result = TrainResult(code, run_dir, rendered, plan.report)
    if code != 0:
        return result
    if cfg.launch.node_rank != 0:
        # Only global rank 0 (on node 0) saves the model, checkpoints and logs: this folder holds
        # the config and data, and no run.json that would promise weights it does not have.
        result.worker_note = (
            f"node {cfg.launch.node_rank} of {cfg.launch.nnodes} finished; the results (weights, checkpoints, logs, run.json) "
            f"are on node 0 ({cfg.launch.master_addr}), in its run folder"
        )
        return result

    write_run(
        RunInfo(
            run_dir=run_dir,
            base_model=plan.resolved.model_path,
            template=cfg.dataset.template,
            finetuning_type=cfg.method.finetuning_type,
            prompt=data.prompt,
            labels=list(data.labels),
            # Relative to the run folder (load_run resolves it), so a run folder can be moved.
            adapter_dir=Path(".") if cfg.method.finetuning_type == "lora" else None,
            quantization_bit=cfg.model.quantization_bit,
            cutoff_len=plan.sequences.cutoff_len,
        )
    )
    from nerft.training.summary import read_summary

    result.summary = read_summary(run_dir, packed=plan.packing, resumed=checkpoint is not None)
    return result


def _prepare_data(plan) -> None:
    """The plan's data written into its dataset folder, once (the plan validated it already)."""
    from nerft.data.prepare import prepare_dataset
    from nerft.training.plan import dataset_name

    cfg = plan.config
    prepare_dataset(
        train=cfg.data.train,
        dev=cfg.data.dev,
        out_dir=plan.data.dataset_dir,
        name=dataset_name(cfg),
        val_size=cfg.data.val_size,
        seed=cfg.data.seed,
        labels=cfg.data.labels,
        prompt=cfg.data.prompt,
        skip_invalid=cfg.data.skip_invalid,
        checked=plan.data.checked,
    )


def _nerft_yaml(cfg: NerftConfig, loaded: LoadedConfig, overrides) -> str:
    overrides_text = "".join(f"\n#   --set {item}" for item in overrides)
    header = (
        f"# nerft {__version__}: the resolved config of this run (from {loaded.path}{overrides_text and ' with:'}){overrides_text}\n"
        f"# Train again with: nerft train {{this file}} --output-dir NEW_DIR\n"
    )
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True, width=1000)
