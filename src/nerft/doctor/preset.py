"""Read a training config into the `TrainingPlan` the doctor reasons about.

A nerft config (sections `model:`, `train:`, ...; a preset name like `tiny-cpu` works too) is
planned by `nerft train`'s own `plan_run` (a misspelt section is refused as train refuses it,
`cutoff_len: auto` measured on the data as train measures it); a flat file of LLaMA-Factory
arguments, such as a run folder's `llamafactory_train.yaml`, is read as it is. Either way the
plan speaks LLaMA-Factory's argument names.
"""

from __future__ import annotations

import os
from typing import Any

from nerft.doctor.memory import TrainingPlan
from nerft.errors import ConfigError

MODEL_KEYS = ("model_name_or_path", "name_or_path", "base_model")


def plan_from_llamafactory_args(args: dict[str, Any], *, source: str = "") -> TrainingPlan:
    """Build a plan from LLaMA-Factory training arguments (missing ones take its defaults)."""
    model = next((args[key] for key in MODEL_KEYS if args.get(key)), None)
    if not model:
        raise ConfigError(f"{source}: no model_name_or_path: the doctor cannot tell which model this config trains")
    plan = TrainingPlan(model=str(model), source=source)
    if args.get("enable_liger_kernel") == "auto":  # on only when installed: never a failure
        args = {**args, "enable_liger_kernel": False}

    def read(key: str, convert):
        try:
            return convert(args[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key}: cannot read {args[key]!r}") from None

    typed = {
        "finetuning_type": str,
        "quantization_bit": int,
        "bf16": _bool,
        "fp16": _bool,
        "pure_bf16": _bool,
        "cutoff_len": int,
        "per_device_train_batch_size": int,
        "lora_rank": int,
        "lora_target": _list,
        "freeze_trainable_layers": int,
        "flash_attn": str,
        "enable_liger_kernel": _bool,
        "deepspeed": str,
    }
    for key, convert in typed.items():
        if args.get(key) is not None:
            setattr(plan, key, read(key, convert))
    flags = {
        key: read(key, _bool)
        for key in ("packing", "neat_packing", "disable_gradient_checkpointing")
        if args.get(key) is not None
    }
    plan.packing = flags.get("packing", False) or flags.get("neat_packing", False)
    plan.gradient_checkpointing = not flags.get("disable_gradient_checkpointing", False)
    return plan


def read_training_plan(path: str | os.PathLike, *, machine=None) -> TrainingPlan:
    """The plan of the config at `path` (or preset name); a `ConfigError` naming the file when it cannot be read.

    A nerft config is planned by `nerft.training.plan.plan_run`, exactly as `nerft train` plans it
    (the data measured when it is in place, the choices made for `machine`); its rendered
    LLaMA-Factory arguments are what the doctor reads. A flat file of LLaMA-Factory arguments
    (every value a scalar, like a run's `llamafactory_train.yaml`) is read as it is."""
    from nerft.config import resolve_config_path
    from nerft.config.load import read_yaml

    path = resolve_config_path(path)
    data, _ = read_yaml(path)
    if not any(isinstance(value, dict) for value in data.values()):
        plan = plan_from_llamafactory_args(flatten_config(data), source=str(path))
        plan.nerft_config = False
        return plan
    from nerft.training.plan import plan_run

    run_plan = plan_run(path, machine=machine)
    plan = plan_from_llamafactory_args(run_plan.args, source=str(path))
    # as configured: the arguments name the model's folder when it is on disk, and DeepSpeed's JSON file
    plan.model, plan.deepspeed = run_plan.config.model.model_name_or_path, run_plan.config.method.deepspeed
    plan.nerft_config = True
    plan.cutoff_auto = run_plan.config.dataset.cutoff_len == "auto"
    plan.sequence_note = run_plan.sequences.note
    plan.run_plan = run_plan
    return plan


def flatten_config(data: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's keys wherever they sit in a (possibly sectioned) config; the first wins.

    `model:` given as a section (`model: {name_or_path: ...}`) or as a plain string both name the model.
    """
    flat: dict[str, Any] = {}
    model = data.get("model")
    if isinstance(model, str):
        flat["model_name_or_path"] = model
    elif isinstance(model, dict):
        for key in ("name_or_path", "path", "name", "model_name_or_path"):
            if isinstance(model.get(key), str):
                flat["model_name_or_path"] = model[key]
                break
    stack = [data]
    while stack:
        section = stack.pop(0)
        for key, value in section.items():
            if isinstance(value, dict):
                stack.append(value)
            else:
                flat.setdefault(str(key), value)
    return flat


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(value)


def _list(value: Any) -> str:
    return ",".join(str(item) for item in value) if isinstance(value, (list, tuple)) else str(value)
