"""`plan_run`: everything `nerft train` decides before it changes anything, as one `RunPlan`.

The resolved config, the datasets and their measured sequence lengths, the kernel and precision
choices for this machine, the rendered LLaMA-Factory arguments and the exact launch command.
`nerft train --dry-run` prints a plan, `nerft train` carries one out and `nerft doctor --config`
judges one, so the three cannot disagree on a figure; `can_run_here` is the one rule for whether a
plan runs on a machine.

Planning has no side effects: it reads the config, the data (validated and measured, written
nowhere) and the model's tokenizer when it is on disk, and writes nothing (the tiny model, built
into nerft's cache on first use, is the one exception: it is a cache fill).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerft import __version__, process
from nerft.config.llamafactory_args import check_train_args
from nerft.config.load import LoadedConfig, load_config, resolve_config_path, resolve_paths
from nerft.config.render import Resolved, flatten, flatten_config, render_llamafactory_args, to_llamafactory_yaml
from nerft.config.schema import NerftConfig
from nerft.data.prepare import CheckedInputs, check_inputs, read_dataset_info, read_prepare_meta, shared_folder_name
from nerft.errors import ConfigError, DataError, EnvironmentProblem, NerftError
from nerft.io import read_yaml
from nerft.models.download import find_model
from nerft.prompts import get_format
from nerft.runfolder import LLAMAFACTORY_TRAIN, RunFolder
from nerft.training import kernels, lengths
from nerft.training.launch import deepspeed_config_path, describe_launch, train_command
from nerft.training.settings import TrainingSettings

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Requirements:
    """What a training needs of the machine it runs on (LLaMA-Factory's names)."""

    bf16: bool = False
    fp16: bool = False
    pure_bf16: bool = False
    flash_attn: str = "auto"  # as resolved for the machine: fa2/fa3 need flash-attn
    liger: bool = False
    deepspeed: bool = False
    quantization_bit: int | None = None
    nerft_config: bool = True  # keys are nerft's (train.bf16, fixed with --set); else a flat LLaMA-Factory file
    source: str = ""

    @property
    def mixed_precision(self) -> list[str]:
        """The precision flags that are on: bf16, fp16, pure_bf16."""
        return [name for name in ("bf16", "fp16", "pure_bf16") if getattr(self, name)]

    @property
    def needs_cuda(self) -> bool:
        """bf16/fp16 mixed precision and bitsandbytes quantization fail without a CUDA GPU."""
        return bool(self.mixed_precision) or self.quantization_bit is not None

    def key(self, section: str, name: str) -> str:
        return f"{section}.{name}" if self.nerft_config else name

    def fix(self, *settings: tuple[str, str, str]) -> str:
        """How to change (section, key, value) settings: --set for a nerft config, an edit otherwise."""
        if self.nerft_config:
            return "add " + " ".join(f"--set {section}.{key}={value}" for section, key, value in settings)
        return (
            "set "
            + " and ".join(f"{key}: {value}" for _, key, value in settings)
            + f" in {self.source or 'the config'}"
        )


@dataclass(frozen=True)
class Blocker:
    """One reason a plan cannot run on a machine."""

    check: str  # the doctor's name for it: precision, flash-attn, liger-kernel, deepspeed, quantization
    message: str
    hint: str | None
    needs_gpu: bool = False  # refused because the machine has no usable CUDA GPU
    missing_package: bool = False

    def error(self) -> NerftError:
        kind = EnvironmentProblem if self.missing_package else ConfigError
        return kind(self.message, hint=self.hint)


def can_run_here(plan: RunPlan, machine: kernels.Machine) -> list[Blocker]:
    """Why `plan` cannot train on `machine`; empty when it can. `nerft train` stops on the first,
    the doctor lists them all."""
    needs = plan.requirements
    blockers = []
    mixed = needs.mixed_precision
    if mixed and not machine.cuda:
        flag = mixed[0]
        fix = needs.fix(*(("train", name, "false") for name in mixed))
        blockers.append(
            Blocker(
                "precision",
                f"{needs.key('train', flag)} is true but this machine has no CUDA GPU: LLaMA-Factory cannot train in {flag} on a CPU",
                f"{fix} to train in float32 here",
                needs_gpu=True,
            )
        )
    elif (needs.bf16 or needs.pure_bf16) and not machine.bf16:
        gpu = machine.gpu_name or "this GPU"
        capability = f" (compute capability {machine.compute_capability})" if machine.compute_capability else ""
        blockers.append(
            Blocker(
                "precision",
                f"{needs.key('train', 'bf16')} is true but {gpu}{capability} has no bf16: it needs compute capability "
                f"{'.'.join(map(str, kernels.MIN_BF16_CAPABILITY))} (Ampere) or newer",
                needs.fix(("train", "bf16", "false"), ("train", "fp16", "true")),
            )
        )
    packages = (
        (
            "flash-attn",
            "flash_attn",
            needs.flash_attn in ("fa2", "fa3"),
            f"{needs.key('model', 'flash_attn')}: {needs.flash_attn}",
        ),
        ("liger-kernel", "liger_kernel", needs.liger, f"{needs.key('model', 'enable_liger_kernel')}: true"),
        ("deepspeed", "deepspeed", needs.deepspeed, f"{needs.key('method', 'deepspeed')}"),
        (
            "quantization",
            "bitsandbytes",
            needs.quantization_bit is not None,
            f"{needs.key('model', 'quantization_bit')}: {needs.quantization_bit}",
        ),
    )
    for check, module, wanted, _ in packages:
        if wanted and not machine.has(module):
            name = kernels.KERNEL_MODULES[module]
            blockers.append(
                Blocker(
                    check, f"this run needs {name}, which is not installed", f"pip install {name}", missing_package=True
                )
            )
    gpu_only = [setting for check, _, wanted, setting in packages if wanted and check != "deepspeed"]
    if gpu_only and not machine.cuda:
        blockers.append(
            Blocker(
                "quantization"
                if needs.quantization_bit is not None
                else "flash-attn"
                if needs.flash_attn in ("fa2", "fa3")
                else "liger-kernel",
                f"{', '.join(gpu_only)}: FlashAttention, Liger kernels and 4/8-bit quantization need a CUDA GPU, and this machine has none",
                None,
                needs_gpu=True,
            )
        )
    return blockers


@dataclass(frozen=True)
class PlannedData:
    """The datasets a run trains on: where LLaMA-Factory finds them and what is in them."""

    dataset_dir: Path
    train_name: str
    eval_name: str | None
    prompt: str
    labels: tuple[str, ...]
    checked: CheckedInputs | None = None  # the data validated by the plan: `prepare` does not check it again

    @property
    def records(self) -> dict[str, int]:
        """Records per split, when the data was read."""
        return self.checked.split_records if self.checked is not None else {}

    @property
    def all_names(self) -> list[str]:
        """The dataset names, split and stripped as LLaMA-Factory does with `dataset: a, b`."""
        return dataset_names(self.train_name, self.eval_name)


def dataset_names(train: str, eval_: str | None) -> list[str]:
    return [name.strip() for name in (*train.split(","), *(eval_ or "").split(",")) if name.strip()]


@dataclass(frozen=True)
class TrainingJob:
    """What `nerft train` carries out for a nerft config: the run folder, the data, the sequences,
    LLaMA-Factory's arguments and the launch."""

    loaded: LoadedConfig
    config: NerftConfig  # paths resolved
    overrides: tuple[str, ...]
    run_dir: Path
    machine: kernels.Machine
    model_path: Path | None  # None: not on disk (the YAML names the model as configured)
    data: PlannedData
    sequences: lengths.SequencePlan
    resolved: Resolved
    sections: Mapping[str, Mapping[str, Any]]  # the LLaMA-Factory arguments, by section
    argv: tuple[str, ...]
    env: Mapping[str, str]
    choices: tuple[tuple[str, str], ...]  # (topic, the choice made and why): train's log and summary
    notes: tuple[tuple[str, str], ...]  # (topic, note): what the data holds, and what is not in place yet
    checkpoint: Path | None = None
    missing_data: tuple[str, ...] = ()  # data files not in place: planned, not measured

    @property
    def args(self) -> dict[str, Any]:
        return flatten(self.sections)

    @property
    def packing(self) -> bool:
        return bool(self.config.dataset.packing or self.config.dataset.neat_packing)

    @property
    def train_yaml(self) -> Path:
        return self.run_dir / LLAMAFACTORY_TRAIN

    def rendered_yaml(self) -> str:
        """`llamafactory_train.yaml`: the arguments, headed by where they came from and the exact launch."""
        overrides_text = f" with {' '.join('--set ' + item for item in self.overrides)}" if self.overrides else ""
        header = (
            f"Rendered by nerft {__version__} from {self.loaded.path}{overrides_text}.\n"
            f"Run: {process.format_command(list(self.argv), dict(self.env))}"  # with the launch environment (torchrun, nodes) nerft adds
        )
        return to_llamafactory_yaml(self.sections, header=header)


@dataclass(frozen=True)
class RunPlan:
    """One training, decided before any of it is done: its settings (what the doctor and the memory
    estimate read) and, for a nerft config, the job `nerft train` carries out."""

    settings: TrainingSettings
    source: str = ""  # the config file
    nerft_config: bool = False  # a nerft config: `nerft train` runs it, and stops where LLaMA-Factory would only warn
    cutoff_auto: bool = False  # cutoff_len: auto, sized on the data (or CLUENER's lengths) as train sizes it
    sequence_note: str = ""  # how cutoff_len and the batch size were sized
    job: TrainingJob | None = None  # None for a plain LLaMA-Factory file, which train does not run

    @property
    def requirements(self) -> Requirements:
        """What the plan needs of a machine (`can_run_here` reads it)."""
        settings = self.settings
        return Requirements(
            bf16=settings.bf16,
            fp16=settings.fp16,
            pure_bf16=settings.pure_bf16,
            flash_attn=settings.flash_attn,
            liger=settings.enable_liger_kernel,
            deepspeed=bool(settings.deepspeed),
            quantization_bit=settings.quantization_bit,
            nerft_config=self.nerft_config,
            source=self.source,
        )


def default_run_dir(loaded: LoadedConfig) -> Path:
    configured = loaded.config.output.output_dir
    return Path(configured) if configured else Path("runs") / loaded.path.stem


def read_plan(path: str | os.PathLike, *, machine: kernels.Machine | None = None) -> RunPlan:
    """The plan of the config at `path` (or a preset name), as the doctor judges it: a nerft config
    is planned by `plan_run`, exactly as `nerft train` plans it; a plain file of LLaMA-Factory
    arguments (every value a scalar, like a run's `llamafactory_train.yaml`) is read as it is."""
    path = resolve_config_path(path)
    data, _ = read_yaml(path, error=ConfigError)
    if any(isinstance(value, dict) for value in data.values()):
        return plan_run(path, machine=machine)
    return RunPlan(TrainingSettings.from_args(flatten_config(data), source=str(path)), source=str(path))


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


def plan_run(
    config: str | os.PathLike | LoadedConfig,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    output_dir: Path | None = None,
    resume: bool = False,
    machine: kernels.Machine | None = None,
) -> RunPlan:
    """The plan of training `config` (a path, preset name or loaded config) with `--set` `overrides`
    on `machine` (default: this one), with `resume` from the run folder's latest checkpoint. Raises
    what the config, the data or LLaMA-Factory's argument parser refuse; machine problems are left
    to `can_run_here`."""
    loaded = config if isinstance(config, LoadedConfig) else load_config(config, overrides=list(overrides))
    cfg = resolve_paths(loaded.config)
    run_dir = Path(output_dir or default_run_dir(loaded)).expanduser().resolve()
    checkpoint = latest_checkpoint(run_dir) if resume else None
    machine = machine if machine is not None else kernels.detect_machine()
    flash_attn, attention_reason = kernels.choose_attention(cfg.model.flash_attn, machine)
    liger, liger_reason = kernels.choose_liger(cfg.model.enable_liger_kernel, machine)
    deepspeed = deepspeed_config_path(cfg.method.deepspeed)
    choices = [
        ("machine", machine.describe()),
        ("attention", f"{flash_attn} ({attention_reason})"),
        ("liger", f"{'on' if liger else 'off'} ({liger_reason})"),
    ]
    notes: list[tuple[str, str]] = []

    model_path = find_model(cfg.model.model_name_or_path)
    if model_path is None:
        name = cfg.model.model_name_or_path
        notes.append(("note", f"{name} is not on disk: the YAML names it as is; `nerft download {name}` fetches it"))

    packing = bool(cfg.dataset.packing or cfg.dataset.neat_packing)
    measure = cfg.dataset.cutoff_len == "auto" or packing
    missing = tuple(
        str(path) for path in (cfg.data.train, cfg.data.dev) if path is not None and not Path(path).is_file()
    )
    examples: list[dict] = []
    if missing:
        # The plan of a run whose data is not in place yet: the datasets prepare will register,
        # sequences sized by CLUENER's measured lengths.
        notes.append(("note", f"{', '.join(missing)} not found: sequences sized by CLUENER's lengths, not this data"))
        data = _planned_data(cfg, run_dir)
        stats = lengths.CLUENER_QWEN2_LENGTHS.get(cfg.data.prompt, lengths.CLUENER_QWEN2_LENGTHS["seed"])
    elif cfg.data.train is not None:
        data = _checked_data(cfg, run_dir, examples if measure else None)
        notes += [("", str(finding)) for finding in data.checked.findings[:20]]
        counts = ", ".join(f"{split} {count}" for split, count in data.records.items())
        notes.append(("data", f"{counts} records, prompt {data.prompt}"))
        stats = None
    else:
        data = _registered_data(cfg)
        if measure:
            examples = list(lengths.iter_alpaca_examples(data.dataset_dir, data.all_names))
        stats = None
    if measure and not missing:
        if model_path is not None:
            stats = lengths.measure_token_lengths(examples, tokenizer_dir=model_path, template=cfg.dataset.template)
        else:
            stats = lengths.bound_token_lengths(examples)
    sequences = lengths.plan_sequences(
        stats,
        cutoff_len=cfg.dataset.cutoff_len,
        packing=packing,
        per_device_train_batch_size=cfg.train.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.eval.per_device_eval_batch_size,
    )
    choices.append(("sequences", sequences.note))

    resolved = Resolved(
        run_dir=run_dir,
        model_path=str(model_path or cfg.model.model_name_or_path),
        dataset_dir=data.dataset_dir,
        dataset=data.train_name,
        eval_dataset=data.eval_name,
        cutoff_len=sequences.cutoff_len,
        flash_attn=flash_attn,
        enable_liger_kernel=liger,
        per_device_train_batch_size=sequences.per_device_train_batch_size,
        per_device_eval_batch_size=sequences.per_device_eval_batch_size,
        deepspeed=deepspeed,
        resume_from_checkpoint=str(checkpoint) if checkpoint else None,
    )
    sections = render_llamafactory_args(cfg, resolved)
    args = flatten(sections)
    train_yaml = run_dir / LLAMAFACTORY_TRAIN
    check_train_args(args, source=str(train_yaml))
    # The doctor reads the arguments as configured: the model's name rather than its folder, and
    # DeepSpeed's preset rather than its JSON file.
    configured = {**args, "model_name_or_path": cfg.model.model_name_or_path, "deepspeed": cfg.method.deepspeed}
    settings = TrainingSettings.from_args(configured, source=str(loaded.path))
    unplaced = RunPlan(settings, source=str(loaded.path), nerft_config=True)
    # A plan that cannot run here (a dry run of a GPU config on a laptop) shows the launch of the GPU it is written for.
    on_cpu = not machine.cuda and not can_run_here(unplaced, machine)
    argv, env = train_command(
        train_yaml, cfg.launch, deepspeed=bool(deepspeed), gpu_count=machine.gpu_count, cpu=on_cpu
    )
    if env:
        choices.append(("launch", describe_launch(env)))
    job = TrainingJob(
        loaded=loaded,
        config=cfg,
        overrides=tuple(str(item) for item in overrides),
        run_dir=run_dir,
        machine=machine,
        model_path=model_path,
        data=data,
        sequences=sequences,
        resolved=resolved,
        sections=sections,
        argv=tuple(argv),
        env=env,
        choices=tuple(choices),
        notes=tuple(notes),
        checkpoint=checkpoint,
        missing_data=missing,
    )
    return RunPlan(
        settings,
        source=str(loaded.path),
        nerft_config=True,
        cutoff_auto=cfg.dataset.cutoff_len == "auto",
        sequence_note=sequences.note,
        job=job,
    )


def _planned_data(cfg: NerftConfig, run_dir: Path, checked: CheckedInputs | None = None) -> PlannedData:
    """The datasets `prepare` will register for this config (`checked`: the data as validated)."""
    has_dev = cfg.data.dev is not None or cfg.data.val_size > 0
    fmt = get_format(cfg.data.prompt, cfg.data.labels)
    name = dataset_name(cfg)
    return PlannedData(
        _dataset_dir(cfg, run_dir), f"{name}_train", f"{name}_dev" if has_dev else None, fmt.name, fmt.labels, checked
    )


def _checked_data(cfg: NerftConfig, run_dir: Path, examples: list[dict] | None) -> PlannedData:
    """The data validated as `prepare` validates it (one pass), its examples collected to measure."""
    if not 0 <= cfg.data.val_size < 1:
        raise DataError(f"data.val_size must be in [0, 1), got {cfg.data.val_size}")
    fmt = get_format(cfg.data.prompt, cfg.data.labels)
    inputs = {
        split: Path(path) for split, path in (("train", cfg.data.train), ("dev", cfg.data.dev)) if path is not None
    }
    collect = None if examples is None else (lambda record: examples.append(fmt.example(record)))
    checked = check_inputs(
        inputs,
        labels=cfg.data.labels,
        skip_invalid=cfg.data.skip_invalid,
        val_size=cfg.data.val_size,
        on_valid=collect,
        fmt=fmt,
    )
    return _planned_data(cfg, run_dir, checked)


def _dataset_dir(cfg: NerftConfig, run_dir: Path) -> Path:
    return Path(cfg.data.dataset_dir) if cfg.data.dataset_dir else RunFolder(run_dir).data_dir


def dataset_name(cfg: NerftConfig) -> str:
    """data.name; in a data.dataset_dir that other trainings may share, a name of this data's own."""
    if cfg.data.dataset_dir is None:
        return cfg.data.name
    return shared_folder_name(cfg.data)


def _registered_data(cfg: NerftConfig) -> PlannedData:
    """A dataset already registered in a dataset_info.json (data.train absent): check that it exists."""
    dataset_dir = Path(cfg.dataset.dataset_dir)
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        raise DataError(
            f"dataset.dataset_dir: {info_path} does not exist", hint="prepare data with `nerft prepare --out DIR`"
        )
    info = read_dataset_info(dataset_dir)
    names = dataset_names(cfg.dataset.dataset, cfg.dataset.eval_dataset)
    for name in names:
        if name not in info:
            raise DataError(
                f"dataset {name!r} is not registered in {info_path} (it has: {', '.join(sorted(info)) or 'nothing'})"
            )
        if not (dataset_dir / info[name].get("file_name", "")).is_file():
            raise DataError(
                f"{dataset_dir / info[name].get('file_name', '')}: no such file (dataset {name!r} in {info_path})"
            )
    prompt, labels = cfg.data.prompt, cfg.data.labels
    # `nerft prepare` leaves <name>_meta.json beside the data: the prompt format the data was written in.
    for meta_path in sorted(dataset_dir.glob("*_meta.json")):
        meta = read_prepare_meta(meta_path)
        if names[0] in meta.get("datasets", {}).values():
            prompt, labels = meta.get("prompt", prompt), meta.get("labels", labels)
            break
    fmt = get_format(prompt, labels)
    return PlannedData(dataset_dir, cfg.dataset.dataset, cfg.dataset.eval_dataset, fmt.name, fmt.labels)
