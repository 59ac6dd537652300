"""From a nerft config to the arguments of `llamafactory-cli train`, and to the YAML it reads.

What nerft decides itself (the model folder, the prepared datasets, `cutoff_len`, attention,
kernels, batch sizes under packing, DeepSpeed file, checkpoint to resume) comes in as `Resolved`;
everything else is the config's own values, section by section, plus the LLaMA-Factory keys the
config passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nerft.config.schema import LLAMAFACTORY_SECTIONS, NerftConfig


@dataclass
class Resolved:
    """The values nerft works out at launch time."""

    run_dir: Path
    model_path: str
    dataset_dir: Path
    dataset: str
    eval_dataset: str | None
    cutoff_len: int
    flash_attn: str
    enable_liger_kernel: bool
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    deepspeed: str | None = None
    resume_from_checkpoint: str | None = None


def render_llamafactory_args(config: NerftConfig, resolved: Resolved) -> dict[str, dict[str, Any]]:
    """LLaMA-Factory's training arguments, grouped by section (flatten them with `flatten`)."""
    model = config.model
    method = config.method
    dataset = config.dataset
    output = config.output
    train = config.train
    evaluation = config.eval
    lora = method.finetuning_type == "lora"

    sections: dict[str, dict[str, Any]] = {
        "model": {
            "model_name_or_path": resolved.model_path,
            "trust_remote_code": model.trust_remote_code,
            "flash_attn": resolved.flash_attn,
            "enable_liger_kernel": resolved.enable_liger_kernel,
            "quantization_bit": model.quantization_bit,
        },
        "method": {
            "stage": method.stage,
            "do_train": True,
            "finetuning_type": method.finetuning_type,
            "lora_rank": method.lora_rank if lora else None,
            "lora_target": method.lora_target if lora else None,
            "deepspeed": resolved.deepspeed,
        },
        "dataset": {
            "dataset_dir": str(resolved.dataset_dir),
            "dataset": resolved.dataset,
            "eval_dataset": resolved.eval_dataset,
            "template": dataset.template,
            "cutoff_len": resolved.cutoff_len,
            "packing": dataset.packing,
            "neat_packing": dataset.neat_packing or None,
            "max_samples": dataset.max_samples,
            "overwrite_cache": dataset.overwrite_cache,
            "preprocessing_num_workers": dataset.preprocessing_num_workers,
            "dataloader_num_workers": dataset.dataloader_num_workers,
        },
        "output": {
            "output_dir": str(resolved.run_dir),
            "logging_steps": output.logging_steps,
            "save_steps": output.save_steps,
            "plot_loss": output.plot_loss,
            "save_only_model": output.save_only_model,
            "report_to": output.report_to,
        },
        "train": {
            "per_device_train_batch_size": resolved.per_device_train_batch_size,
            "gradient_accumulation_steps": train.gradient_accumulation_steps,
            "learning_rate": train.learning_rate,
            "num_train_epochs": train.num_train_epochs,
            "max_steps": train.max_steps,
            "lr_scheduler_type": train.lr_scheduler_type,
            # transformers 5 deprecates warmup_ratio: its warmup_steps takes a ratio as a float below 1.
            **(
                {"warmup_steps": train.warmup_ratio}
                if _transformers_major() >= 5
                else {"warmup_ratio": train.warmup_ratio}
            ),
            "bf16": train.bf16,
            "fp16": train.fp16,
            "resume_from_checkpoint": resolved.resume_from_checkpoint,
        },
        "eval": {},
    }
    if resolved.eval_dataset and evaluation.eval_strategy != "no":
        sections["eval"] = {
            "per_device_eval_batch_size": resolved.per_device_eval_batch_size,
            "eval_strategy": evaluation.eval_strategy,
            "eval_steps": evaluation.eval_steps if evaluation.eval_strategy == "steps" else None,
        }
    else:
        # Without an eval dataset, transformers refuses any eval strategy but "no".
        sections["eval"] = {"eval_strategy": "no"}

    for name in LLAMAFACTORY_SECTIONS:
        sections[name].update(getattr(config, name).passthrough())
        sections[name] = {key: value for key, value in sections[name].items() if value is not None}
    return sections


def _transformers_major() -> int:
    from importlib import metadata

    try:
        return int(metadata.version("transformers").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return 5


def flatten(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {key: value for section in sections.values() for key, value in section.items()}


def flatten_config(data: Mapping[str, Any]) -> dict[str, Any]:
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


def to_llamafactory_yaml(sections: dict[str, dict[str, Any]], *, header: str = "") -> str:
    """The YAML `llamafactory-cli train` reads, laid out like LLaMA-Factory's own examples."""
    parts = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, values in sections.items():
        if not values:
            continue
        if parts:
            parts.append("")
        parts.append(f"### {name}")
        parts.append(
            yaml.safe_dump(values, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000).rstrip()
        )
    return "\n".join(parts) + "\n"
