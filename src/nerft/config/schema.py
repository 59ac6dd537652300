"""nerft's training config: one pydantic model per section.

The sections mirror the `### model / method / dataset / output / train / eval` blocks of
LLaMA-Factory's example YAML files, so a tutorial's YAML moves over key by key. Two sections are
nerft's own: `data` (where the raw CLUE NER files are, which prompt format) and `launch` (how
`llamafactory-cli` is started: torchrun over GPUs and nodes).

The keys declared below are typed and checked here. A LLaMA-Factory section also accepts any other
LLaMA-Factory argument (`ddp_timeout`, `lora_alpha`, ...): such keys are passed through as they
are, but only after `nerft.config.llamafactory_args` has found them among the installed
LLaMA-Factory's arguments, so a misspelt key is an error, never silently dropped. nerft's own
sections accept no unknown key at all.

`check_*` validators reject combinations that cannot work; choices that depend on the machine
(attention, kernels, `cutoff_len: auto`) are resolved later, at launch, by `nerft.training`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nerft.prompts import PROMPT_FORMATS

# LLaMA-Factory keys that nerft sets itself, with the nerft way to set them.
MANAGED_KEYS = {
    "output_dir": "use `nerft train --output-dir DIR` or output.output_dir",
    "overwrite_output_dir": "use `nerft train --force`",
    "resume_from_checkpoint": "use `nerft train --resume`",
    "dataset": "set by nerft from the data section (or give dataset.dataset with no data.train)",
    "dataset_dir": "set by nerft from the data section (or give dataset.dataset_dir with no data.train)",
    "eval_dataset": "set by nerft from data.dev (or give dataset.eval_dataset with no data.train)",
    "val_size": "use data.val_size: nerft splits the dev set off when it prepares the data",
    "do_train": "nerft always trains",
    "stage": "set method.stage (nerft supports sft)",
}
DEEPSPEED_PRESETS = ("zero2", "zero3")


def known_prompt(value: str) -> str:
    """A prompt format name, validated (data.prompt here, run.json's prompt too)."""
    if value not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {value!r} (choose from: {', '.join(PROMPT_FORMATS)})")
    return value


class NerftSection(BaseModel):
    """A section of nerft's own: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LlamaFactorySection(BaseModel):
    """A section mirroring LLaMA-Factory's: other LLaMA-Factory arguments pass through (checked later)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def passthrough(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataSection(NerftSection):
    """The raw CLUE NER files `nerft train` prepares (with `nerft prepare`'s code) before training."""

    train: Path | None = Field(None, description="Training records (CLUE NER JSON lines/array or BIO/BMES).")
    dev: Path | None = Field(None, description="Dev records, evaluated during training; split off train when absent.")
    name: str = Field("cluener", description="Dataset name prefix in dataset_info.json.")
    prompt: str = Field("compact", description="Prompt format: compact (few tokens) or seed (the tutorials').")
    labels: list[str] | None = Field(None, description="Allowed labels; CLUENER's ten when absent.")
    val_size: float = Field(
        0.1, ge=0, lt=1, description="Share of train held out as dev when data.dev is absent (0: none)."
    )
    seed: int = 42
    skip_invalid: bool = False
    dataset_dir: Path | None = Field(None, description="Where the prepared files go; <run folder>/data when absent.")

    @field_validator("prompt")
    @classmethod
    def check_prompt(cls, value: str) -> str:
        return known_prompt(value)


class ModelSection(LlamaFactorySection):
    model_name_or_path: str = Field(
        description="A local folder, a ModelScope/Hugging Face id fetched by `nerft download`, or nerft:tiny-qwen2."
    )
    trust_remote_code: bool = True
    flash_attn: Literal["auto", "fa2", "fa3", "sdpa", "disabled"] = Field(
        "auto",
        description="auto: nerft picks FlashAttention-2 when installed on CUDA, else torch SDPA, and reports it.",
    )
    enable_liger_kernel: bool | Literal["auto"] = Field(
        "auto", description="auto: on when liger-kernel is installed on a CUDA machine."
    )
    quantization_bit: Literal[4, 8] | None = None


class MethodSection(LlamaFactorySection):
    stage: Literal["sft"] = "sft"
    finetuning_type: Literal["lora", "full", "freeze"] = "lora"
    lora_rank: int = Field(8, ge=1)
    lora_target: str = "all"
    deepspeed: str | None = Field(None, description="zero2, zero3 (nerft's conf/ files) or a DeepSpeed JSON path.")


class DatasetSection(LlamaFactorySection):
    template: str = "qwen"
    cutoff_len: int | Literal["auto"] = Field(
        "auto",
        description="auto: the longest tokenized example (or, when packing, the pack length), measured at launch.",
    )
    packing: bool | None = None
    neat_packing: bool = False
    max_samples: int | None = Field(None, ge=1)
    overwrite_cache: bool = True
    preprocessing_num_workers: int | None = Field(None, ge=1)
    dataloader_num_workers: int = Field(0, ge=0)
    dataset: str | None = Field(None, description="Registered dataset names; only without data.train.")
    dataset_dir: Path | None = Field(None, description="Folder with dataset_info.json; only without data.train.")
    eval_dataset: str | None = Field(None, description="Registered eval dataset names; only without data.train.")

    @field_validator("cutoff_len")
    @classmethod
    def check_cutoff_len(cls, value):
        if isinstance(value, int) and value < 8:
            raise ValueError("must be at least 8 tokens, or auto")
        return value


class OutputSection(LlamaFactorySection):
    output_dir: Path | None = Field(None, description="Default run folder; `--output-dir` wins.")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    plot_loss: bool = True
    save_only_model: bool = False
    report_to: str = "none"


class TrainSection(LlamaFactorySection):
    per_device_train_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(8, ge=1)
    learning_rate: float = Field(1.0e-4, gt=0)
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (wins over num_train_epochs).")
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    bf16: bool = False
    fp16: bool = False

    @model_validator(mode="after")
    def check_one_precision(self):
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both true: choose one")
        return self


class EvalSection(LlamaFactorySection):
    per_device_eval_batch_size: int = Field(4, ge=1)
    eval_strategy: Literal["no", "steps", "epoch"] = "steps"
    eval_steps: int | None = Field(500, ge=1)

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def yaml_no_is_a_word(cls, value):
        # YAML 1.1 reads `eval_strategy: no` as false; LLaMA-Factory's examples write it that way.
        return "no" if value is False else value


class LaunchSection(NerftSection):
    """How `llamafactory-cli train` is started: LLaMA-Factory's torchrun variables."""

    nnodes: int = Field(1, ge=1, description="NNODES: machines taking part.")
    node_rank: int = Field(0, ge=0, description="NODE_RANK: this machine's rank, 0 on the master.")
    nproc_per_node: int | None = Field(
        None, ge=1, description="NPROC_PER_NODE: GPUs per machine; all visible when absent."
    )
    master_addr: str | None = Field(None, description="MASTER_ADDR: the rank-0 machine's address.")
    master_port: int | None = Field(None, ge=1, le=65535, description="MASTER_PORT: a free port on the master.")
    force_torchrun: bool = Field(False, description="FORCE_TORCHRUN=1 even on one GPU.")

    @model_validator(mode="after")
    def check_ranks(self):
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.nnodes > 1 and (not self.master_addr or self.master_port is None):
            # Without MASTER_PORT, LLaMA-Factory picks a free port on each machine: they would never meet.
            raise ValueError(
                "multi-node training needs master_addr and master_port (the rank-0 machine's address and a free port there)"
            )
        return self


LLAMAFACTORY_SECTIONS = ("model", "method", "dataset", "output", "train", "eval")
SECTIONS = ("data", *LLAMAFACTORY_SECTIONS, "launch")


class NerftConfig(NerftSection):
    """A whole training config."""

    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection
    method: MethodSection = Field(default_factory=MethodSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    output: OutputSection = Field(default_factory=OutputSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)

    @model_validator(mode="after")
    def check_dataset_source(self):
        if self.data.train is not None:
            given = [
                key for key in ("dataset", "dataset_dir", "eval_dataset") if getattr(self.dataset, key) is not None
            ]
            if given:
                raise ValueError(f"dataset.{given[0]} is set by nerft from data.train; give one or the other")
        elif self.dataset.dataset is None:
            raise ValueError(
                "no training data: set data.train (raw CLUE NER file) or dataset.dataset (a registered dataset)"
            )
        elif self.dataset.dataset_dir is None:
            raise ValueError("dataset.dataset needs dataset.dataset_dir (the folder with dataset_info.json)")
        return self

    @model_validator(mode="after")
    def check_quantization(self):
        if self.model.quantization_bit is not None and self.method.finetuning_type != "lora":
            raise ValueError("model.quantization_bit (QLoRA) needs method.finetuning_type: lora")
        return self

    def llamafactory_sections(self) -> dict[str, LlamaFactorySection]:
        return {name: getattr(self, name) for name in LLAMAFACTORY_SECTIONS}
