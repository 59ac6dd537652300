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

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nerft import __version__, process
from nerft.config.llamafactory_args import INSTALL_HINT
from nerft.config.load import config_to_dict
from nerft.data.prepare import prepare_dataset, read_dataset_info
from nerft.errors import ConfigError, DataError
from nerft.io import refuse_collisions, write_text_atomic
from nerft.models.download import missing_model
from nerft.runfolder import RUN_CONFIG, RunFolder, RunInfo, write_run
from nerft.training.plan import TrainingJob, can_run_here, dataset_name, plan_run
from nerft.training.summary import TrainSummary, read_summary


@dataclass
class TrainResult:
    exit_code: int
    run_dir: Path
    rendered_yaml: str
    report: list[str] = field(default_factory=list)  # choices nerft made, for the summary
    summary: TrainSummary | None = None  # after a successful run on node 0
    worker_note: str | None = None  # instead of a summary on a worker node (rank != 0)


def is_run_folder(path: Path) -> bool:
    return RunFolder(path).is_run()


def check_run_folder(job: TrainingJob, *, resume: bool, force: bool) -> None:
    """Refuse to train over an existing run unless asked, or to resume one without a checkpoint."""
    run_dir = job.run_dir
    if resume and force:
        raise ConfigError("--resume and --force contradict each other: continue the run, or start it over")
    occupied = run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))
    if resume:
        if job.checkpoint is None:
            hint = "train without --resume"
            if job.config.launch.node_rank > 0:
                # Every process loads the checkpoint, but only node 0 saves one.
                hint = "a worker node resumes from node 0's checkpoint: share the run folder, or copy node 0's checkpoint-N here"
            raise ConfigError(f"{run_dir}: no checkpoint-* folder to resume from", hint=hint)
        return
    if not occupied:
        return
    if not force:
        raise ConfigError(
            f"{run_dir} is not empty",
            hint="--resume continues from its latest checkpoint, --force deletes it and starts over, or choose another --output-dir",
        )
    if not run_dir.is_dir() or not is_run_folder(run_dir):
        raise ConfigError(
            f"{run_dir} is not a nerft run folder (no {RUN_CONFIG}): nerft will not delete it; remove it yourself"
        )
    data = job.config.data
    refuse_collisions(  # --force deletes the folder: nothing training reads may be in it
        {
            "data.train": data.train,
            "data.dev": data.dev,
            "the model": job.model_path,
            # a dataset folder prepared from data.train is written again after the deletion
            "data.dataset_dir": job.data.dataset_dir if data.train is None else None,
        },
        {},
        replaced_folders={"--output-dir": run_dir},
        hint="move it out of the run folder, or choose another --output-dir",
    )


def format_line(topic: str, text: str) -> str:
    """A line of train's log: the topic in a column of its own."""
    return f"{topic:<12} {text}" if topic else text


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
    plan = plan_run(config, overrides, output_dir=output_dir, resume=resume)
    job = plan.job
    blockers = can_run_here(plan, job.machine)
    if not dry_run:
        check_run_folder(job, resume=resume, force=force)
        if job.model_path is None:
            raise missing_model(job.config.model.model_name_or_path)  # on disk, or how to get it
        if job.missing_data:
            raise DataError(f"{job.missing_data[0]}: no such file")
        if blockers:
            raise blockers[0].error()
    report = [format_line(*choice) for choice in job.choices]
    for line in [format_line(*note) for note in job.notes] + report:
        log(line)
    run_dir = job.run_dir
    rendered = job.rendered_yaml()
    if dry_run:
        if blockers:
            # a dry run shows the YAML for the GPU the config is written for
            log(format_line("note", f"on this machine training would stop here: {blockers[0].error()}"))
        return TrainResult(0, run_dir, rendered, report)

    cfg, data = job.config, job.data
    prepared_here = cfg.data.train is not None
    if prepared_here and not data.dataset_dir.resolve().is_relative_to(run_dir):
        read_dataset_info(data.dataset_dir)  # a broken one outside the run is refused before --force deletes anything
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if prepared_here:
        _prepare_data(job)
    write_text_atomic(run_dir / RUN_CONFIG, _nerft_yaml(job))
    write_text_atomic(job.train_yaml, rendered)
    code = process.run_program(list(job.argv), env=dict(job.env), install_hint=INSTALL_HINT, stdout_to_stderr=True)
    result = TrainResult(code, run_dir, rendered, report)
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
            base_model=job.resolved.model_path,
            template=cfg.dataset.template,
            finetuning_type=cfg.method.finetuning_type,
            prompt=data.prompt,
            labels=list(data.labels),
            # Relative to the run folder (load_run resolves it), so a run folder can be moved.
            adapter_dir=Path(".") if cfg.method.finetuning_type == "lora" else None,
            quantization_bit=cfg.model.quantization_bit,
            cutoff_len=job.sequences.cutoff_len,
        )
    )
    result.summary = read_summary(run_dir, packed=job.packing, resumed=job.checkpoint is not None)
    return result


def _prepare_data(job: TrainingJob) -> None:
    """The plan's data written into its dataset folder, once (the plan validated it already)."""
    cfg = job.config
    prepare_dataset(
        train=cfg.data.train,
        dev=cfg.data.dev,
        out_dir=job.data.dataset_dir,
        name=dataset_name(cfg),
        val_size=cfg.data.val_size,
        seed=cfg.data.seed,
        labels=cfg.data.labels,
        prompt=cfg.data.prompt,
        skip_invalid=cfg.data.skip_invalid,
        checked=job.data.checked,
    )


def _nerft_yaml(job: TrainingJob) -> str:
    overrides_text = "".join(f"\n#   --set {item}" for item in job.overrides)
    header = (
        f"# nerft {__version__}: the resolved config of this run (from {job.loaded.path}{overrides_text and ' with:'}){overrides_text}\n"
        f"# Train again with: nerft train {{this file}} --output-dir NEW_DIR\n"
    )
    return header + yaml.safe_dump(config_to_dict(job.config), sort_keys=False, allow_unicode=True, width=1000)
