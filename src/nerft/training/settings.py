"""`TrainingSettings`: the figures of a training that decide where it runs and how much memory it
takes, in LLaMA-Factory's argument names and with its defaults.

Read from LLaMA-Factory arguments, one way for both sources: the arguments `plan_run` renders from a
nerft config, and a plain LLaMA-Factory YAML (such as a run's `llamafactory_train.yaml`) as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nerft.errors import ConfigError

LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MODEL_KEYS = ("model_name_or_path", "name_or_path", "base_model")


@dataclass(frozen=True)
class TrainingSettings:
    """A training's arguments that the machine check and the memory estimate read."""

    model: str
    finetuning_type: str = "lora"
    quantization_bit: int | None = None
    bf16: bool = False
    fp16: bool = False
    pure_bf16: bool = False
    cutoff_len: int = 2048
    per_device_train_batch_size: int = 8  # transformers' TrainingArguments default
    gradient_checkpointing: bool = True  # LLaMA-Factory enables it unless disable_gradient_checkpointing
    lora_rank: int = 8
    lora_target: str = "all"
    freeze_trainable_layers: int = 2
    packing: bool = False  # packing or neat_packing: a micro-batch is one sequence of the examples
    flash_attn: str = "auto"
    enable_liger_kernel: bool = False
    deepspeed: str | None = None  # zero2, zero3 or a DeepSpeed JSON file

    @classmethod
    def from_args(cls, args: Mapping[str, Any], *, source: str = "") -> TrainingSettings:
        """The settings in LLaMA-Factory arguments (missing ones take its defaults); a `ConfigError`
        naming `source` and the key when a value cannot be read."""
        model = next((args[key] for key in MODEL_KEYS if args.get(key)), None)
        if not model:
            raise ConfigError(f"{source}: no model_name_or_path: the doctor cannot tell which model this config trains")
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
        values: dict[str, Any] = {
            key: read(key, convert) for key, convert in typed.items() if args.get(key) is not None
        }
        flags = {
            key: read(key, _bool)
            for key in ("packing", "neat_packing", "disable_gradient_checkpointing")
            if args.get(key) is not None
        }
        values["packing"] = flags.get("packing", False) or flags.get("neat_packing", False)
        values["gradient_checkpointing"] = not flags.get("disable_gradient_checkpointing", False)
        return cls(model=str(model), **values)

    def lora_modules(self) -> list[str]:
        targets = [name.strip() for name in self.lora_target.split(",") if name.strip()]
        if "all" in targets:
            return list(LINEAR_LAYERS)
        return [name for name in LINEAR_LAYERS if name in targets]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(value)


def _list(value: Any) -> str:
    return ",".join(str(item) for item in value) if isinstance(value, (list, tuple)) else str(value)
