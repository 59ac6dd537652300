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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nerft import __version__, process
from nerft.config.load import LoadedConfig, config_to_dict, load_config, resolve_paths
from nerft.config.render import (
    Resolved,
    flatten,
    render_llamafactory_args,
    to_llamafactory_yaml,
)
from nerft.config.schema import NerftConfig
from nerft.errors import ConfigError, DataError, NerftError
from nerft.io import write_text_atomic
from nerft.runfolder import (
    LLAMAFACTORY_TRAIN,
    RUN_CONFIG,
    RUN_MANIFEST,
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
    found = [(int(match.group(1)), path) for path in run_dir.iterdir() if path.is_dir() and (match := CHECKPOINT.match(path.name))]
    return max(found)[1] if found else None


def is_run_folder(path: Path) -> bool:
    return (path / RUN_CONFIG).is_file() or (path / RUN_MANIFEST).is_file()


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
        raise ConfigError(f"{run_dir} is not a nerft run folder (no {RUN_CONFIG}): nerft will not delete it; remove it yourself")
    return None


def default_run_dir(loaded: LoadedConfig) -> Path:
    configured = loaded.config.output.output_dir
    return Path(configured) if configured else Path("runs") / loaded.path.stem


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
    """Train (or with `dry_run`, only render) a run; `TrainResult.exit_code` is `llamafactory-cli`'s."""
    from nerft.config.llamafactory_args import INSTALL_HINT
    from nerft.training import kernels, lengths
    from nerft.training.launch import deepspeed_config_path, describe_launch, train_command

    loaded = load_config(config, overrides=list(overrides))
    cfg = resolve_paths(loaded.config)
    run_dir = Path(output_dir or default_run_dir(loaded)).expanduser().resolve()
    checkpoint = None if dry_run else check_run_folder(run_dir, resume=resume, force=force, node_rank=cfg.launch.node_rank)

    machine = kernels.detect_machine()
    flash_attn, attention_reason = kernels.choose_attention(cfg.model.flash_attn, machine)
    liger, liger_reason = kernels.choose_liger(cfg.model.enable_liger_kernel, machine)
    deepspeed = deepspeed_config_path(cfg.method.deepspeed)
    report = [
        f"machine      {machine.describe()}",
        f"attention    {flash_attn} ({attention_reason})",
        f"liger        {'on' if liger else 'off'} ({liger_reason})",
    ]
    machine_problem = None
    try:
        kernels.check_precision(bf16=cfg.train.bf16, fp16=cfg.train.fp16, machine=machine)
        kernels.check_packages(
            flash_attn=flash_attn, liger=liger, deepspeed=bool(deepspeed), quantization_bit=cfg.model.quantization_bit, machine=machine
        )
    except NerftError as exc:
        if not dry_run:
            raise
        machine_problem = str(exc)  # a dry run shows the YAML for the GPU the config is written for

    model_path = _resolve_model(cfg.model.model_name_or_path, dry_run=dry_run, log=log)
    final_dataset_dir = Path(cfg.data.dataset_dir or run_dir / "data") if cfg.data.train else None
    packing = bool(cfg.dataset.packing or cfg.dataset.neat_packing)
    with tempfile.TemporaryDirectory(prefix="nerft-data-") as scratch:
        # The data is first prepared in a scratch folder: validated and measured before anything
        # in the run folder changes (a --force run deletes the old one only once all checks passed).
        missing = _missing_data_files(cfg) if dry_run else []
        if missing:
            # A dry run shows the YAML before the data is in place: it names the datasets prepare
            # will register and sizes sequences by CLUENER's measured lengths.
            log(f"note         {', '.join(missing)} not found: sequences sized by CLUENER's lengths, not this data")
            data = _planned_data(cfg, Path(scratch) / "data")
            stats = lengths.CLUENER_QWEN2_LENGTHS[cfg.data.prompt]
        else:
            data = _prepare_data(cfg, Path(scratch) / "data", log=log)
            stats = None
        if not missing and (cfg.dataset.cutoff_len == "auto" or packing):
            examples = list(lengths.iter_alpaca_examples(data.dataset_dir, data.all_names))
            if model_path is not None:
                stats = lengths.measure_token_lengths(examples, tokenizer_dir=model_path, template=cfg.dataset.template)
            else:
                stats = lengths.bound_token_lengths(examples)
    plan = lengths.plan_sequences(
        stats,
        cutoff_len=cfg.dataset.cutoff_len,
        packing=packing,
        per_device_train_batch_size=cfg.train.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.eval.per_device_eval_batch_size,
    )
    report.append(f"sequences    {plan.note}")

    resolved = Resolved(
        run_dir=run_dir,
        model_path=str(model_path or cfg.model.model_name_or_path),
        dataset_dir=final_dataset_dir or data.dataset_dir,
        dataset=data.train_name,
        eval_dataset=data.eval_name,
        cutoff_len=plan.cutoff_len,
        flash_attn=flash_attn,
        enable_liger_kernel=liger,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        per_device_eval_batch_size=plan.per_device_eval_batch_size,
        deepspeed=deepspeed,
        resume_from_checkpoint=str(checkpoint) if checkpoint else None,
    )
    sections = render_llamafactory_args(cfg, resolved)
    from nerft.config.llamafactory_args import check_train_args

    check_train_args(flatten(sections), source=f"{run_dir / LLAMAFACTORY_TRAIN}")
    # A dry run on a machine that cannot train the config shows the launch of the GPU it is written for.
    on_cpu = not machine.cuda and machine_problem is None
    argv, env = train_command(run_dir / LLAMAFACTORY_TRAIN, cfg.launch, deepspeed=bool(deepspeed), gpu_count=machine.gpu_count, cpu=on_cpu)
    if env:
        report.append(f"launch       {describe_launch(env)}")
    overrides_text = f" with {' '.join('--set ' + item for item in overrides)}" if overrides else ""
    header = (
        f"Rendered by nerft {__version__} from {loaded.path}{overrides_text}.\n"
        f"Run: {process.format_command(argv, env)}"  # with the launch environment (torchrun, nodes) nerft adds
    )
    rendered = to_llamafactory_yaml(sections, header=header)
    for line in report:
        log(line)
    if dry_run:
        if machine_problem:
            log(f"note         on this machine training would stop here: {machine_problem}")
        return TrainResult(0, run_dir, rendered, report)

    if final_dataset_dir is not None and not final_dataset_dir.resolve().is_relative_to(run_dir.resolve()):
        from nerft.data.prepare import read_dataset_info

        read_dataset_info(final_dataset_dir)  # a broken one outside the run is refused before --force deletes anything
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if final_dataset_dir is not None:
        # Prepared again, now for real (validated already, in the scratch folder above).
        _prepare_data(cfg, final_dataset_dir, log=lambda message: None)
    write_text_atomic(run_dir / RUN_CONFIG, _nerft_yaml(cfg, loaded, overrides))
    write_text_atomic(run_dir / LLAMAFACTORY_TRAIN, rendered)
    code = process.run_program(argv, env=env, install_hint=INSTALL_HINT, stdout_to_stderr=True)
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
            base_model=resolved.model_path,
            template=cfg.dataset.template,
            finetuning_type=cfg.method.finetuning_type,
            prompt=data.prompt,
            labels=list(data.labels),
            # Relative to the run folder (load_run resolves it), so a run folder can be moved.
            adapter_dir=Path(".") if cfg.method.finetuning_type == "lora" else None,
            quantization_bit=cfg.model.quantization_bit,
            cutoff_len=plan.cutoff_len,
        )
    )
    from nerft.training.summary import read_summary

    result.summary = read_summary(run_dir, packed=packing, resumed=checkpoint is not None)
    return result


def _resolve_model(name: str, *, dry_run: bool, log: Callable[[str], None]) -> Path | None:
    from nerft.models.download import find_model, resolve_model

    if not dry_run:
        return resolve_model(name)
    found = find_model(name)
    if found is None:
        log(f"note         {name} is not on disk: the YAML names it as is; `nerft download {name}` fetches it")
    return found


@dataclass
class PreparedData:
    dataset_dir: Path
    train_name: str
    eval_name: str | None
    prompt: str
    labels: tuple[str, ...]

    @property
    def all_names(self) -> list[str]:
        """The dataset names, split and stripped as LLaMA-Factory does with `dataset: a, b`."""
        return [name.strip() for name in (*self.train_name.split(","), *(self.eval_name or "").split(",")) if name.strip()]


def _prepare_data(cfg: NerftConfig, dataset_dir: Path, *, log: Callable[[str], None]) -> PreparedData:
    from nerft.prompts import get_format

    if cfg.data.train is not None:
        from nerft.data.prepare import prepare_dataset

        result = prepare_dataset(
            train=cfg.data.train,
            dev=cfg.data.dev,
            out_dir=dataset_dir,
            name=_dataset_name(cfg),
            val_size=cfg.data.val_size,
            seed=cfg.data.seed,
            labels=cfg.data.labels,
            prompt=cfg.data.prompt,
            skip_invalid=cfg.data.skip_invalid,
        )
        for finding in result.findings[:20]:
            log(str(finding))
        counts = ", ".join(f"{split} {summary.records}" for split, summary in result.splits.items())
        log(f"data         {counts} records, prompt {result.prompt}")
        fmt = get_format(cfg.data.prompt, cfg.data.labels)
        return PreparedData(dataset_dir, result.dataset_names["train"], result.dataset_names.get("dev"), result.prompt, fmt.labels)
    return _registered_data(cfg)


def _missing_data_files(cfg: NerftConfig) -> list[str]:
    return [str(path) for path in (cfg.data.train, cfg.data.dev) if path is not None and not Path(path).is_file()]


def _planned_data(cfg: NerftConfig, dataset_dir: Path) -> PreparedData:
    """The datasets `prepare` will register for this config, without reading the data."""
    from nerft.prompts import get_format

    has_dev = cfg.data.dev is not None or cfg.data.val_size > 0
    fmt = get_format(cfg.data.prompt, cfg.data.labels)
    name = _dataset_name(cfg)
    return PreparedData(dataset_dir, f"{name}_train", f"{name}_dev" if has_dev else None, fmt.name, fmt.labels)


def _dataset_name(cfg: NerftConfig) -> str:
    """data.name; in a data.dataset_dir that other trainings may share, a name of this data's own."""
    if cfg.data.dataset_dir is None:
        return cfg.data.name
    from nerft.data.prepare import shared_folder_name

    return shared_folder_name(cfg.data)


def _registered_data(cfg: NerftConfig) -> PreparedData:
    """A dataset already registered in a dataset_info.json (data.train absent): check that it exists."""
    from nerft.prompts import get_format

    dataset_dir = Path(cfg.dataset.dataset_dir)
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        raise DataError(f"dataset.dataset_dir: {info_path} does not exist", hint="prepare data with `nerft prepare --out DIR`")
    from nerft.data.prepare import read_dataset_info, read_prepare_meta

    info = read_dataset_info(dataset_dir)
    names = PreparedData(dataset_dir, cfg.dataset.dataset, cfg.dataset.eval_dataset, "", ()).all_names
    for name in names:
        if name not in info:
            raise DataError(f"dataset {name!r} is not registered in {info_path} (it has: {', '.join(sorted(info)) or 'nothing'})")
        if not (dataset_dir / info[name].get("file_name", "")).is_file():
            raise DataError(f"{dataset_dir / info[name].get('file_name', '')}: no such file (dataset {name!r} in {info_path})")
    prompt, labels = cfg.data.prompt, cfg.data.labels
    # `nerft prepare` leaves <name>_meta.json beside the data: the prompt format the data was written in.
    for meta_path in sorted(dataset_dir.glob("*_meta.json")):
        meta = read_prepare_meta(meta_path)
        if names[0] in meta.get("datasets", {}).values():
            prompt, labels = meta.get("prompt", prompt), meta.get("labels", labels)
            break
    fmt = get_format(prompt, labels)
    return PreparedData(dataset_dir, cfg.dataset.dataset, cfg.dataset.eval_dataset, fmt.name, fmt.labels)


def _nerft_yaml(cfg: NerftConfig, loaded: LoadedConfig, overrides) -> str:
    overrides_text = "".join(f"\n#   --set {item}" for item in overrides)
    header = (
        f"# nerft {__version__}: the resolved config of this run (from {loaded.path}{overrides_text and ' with:'}){overrides_text}\n"
        f"# Train again with: nerft train {{this file}} --output-dir NEW_DIR\n"
    )
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True, width=1000)
