"""Training throughput, the tutorials' setup against nerft's, on the same GPU for the same steps.

- the tutorials' run: their LLaMA-Factory YAML (seed tutorial 000/001: LoRA rank 8 on all linear
  layers, cutoff_len 1024, 4 samples x 8 accumulation steps, bf16, no packing) on data in the
  `seed` prompt format, launched with `llamafactory-cli train`;
- nerft's run: `nerft train qwen7b` (compact prompt, measured cutoff_len, neat packing,
  attention and kernels chosen for the machine) through `nerft.training.train.train`.

Both train a model of Qwen2.5-7B's shape with random weights (speed does not depend on the
values) for `max_steps` optimizer steps, without evaluation. Samples per second counts training
samples (sentences): a packed row holds several, so nerft's rows are converted with the
samples-per-row ratio of LLaMA-Factory's own packing (`benchlib.padding.greedy_knapsack`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nerft.models.shapes import KNOWN_MODELS

# Qwen/Qwen2.5-7B-Instruct's config.json (architecture only): the doctor's shape, and the numbers
# a shape does not hold.
QWEN25_7B_SHAPE = dict(
    **KNOWN_MODELS["qwen2.5-7b-instruct"].config_json(),
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
)

# The tutorials' YAML (shared/seeds 000 and 001, identical there), minus paths and evaluation.
TUTORIAL_TRAIN_ARGS = {
    "trust_remote_code": True,
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "flash_attn": "auto",
    "lora_rank": 8,
    "lora_target": "all",
    "template": "qwen",
    "cutoff_len": 1024,
    "max_samples": 15000,
    "overwrite_cache": True,
    "preprocessing_num_workers": 16,
    "dataloader_num_workers": 8,
    "logging_steps": 10,
    "save_steps": 500,
    "plot_loss": True,
    "overwrite_output_dir": True,
    "save_only_model": False,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "bf16": True,
    "ddp_timeout": 180000000,
    "report_to": "none",
}


def tutorial_train_args(
    *,
    model: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    dataset: str,
    output_dir: str | os.PathLike,
    max_steps: int,
    bf16: bool = True,
    workers: int | None = None,
) -> dict:
    """The tutorials' LLaMA-Factory arguments for a throughput run of `max_steps` steps."""
    args = {
        "model_name_or_path": str(model),
        **TUTORIAL_TRAIN_ARGS,
        "dataset_dir": str(dataset_dir),
        "dataset": dataset,
        "output_dir": str(output_dir),
        "max_steps": max_steps,
        "eval_strategy": "no",
        "bf16": bf16,
    }
    if workers is not None:
        args["preprocessing_num_workers"] = max(workers, 1)
        args["dataloader_num_workers"] = workers
    return args


def nerft_overrides(
    *,
    model: str | os.PathLike,
    train: str | os.PathLike,
    dev: str | os.PathLike,
    max_steps: int,
    bf16: bool = True,
    workers: int | None = None,
) -> list[str]:
    """`--set` overrides that turn a nerft preset into the same throughput run."""
    overrides = [
        f"model.model_name_or_path={model}",
        f"data.train={train}",
        f"data.dev={dev}",
        f"train.max_steps={max_steps}",
        "eval.eval_strategy=no",
    ]
    if not bf16:
        overrides.append("train.bf16=false")
    if workers is not None:
        overrides += [
            f"dataset.preprocessing_num_workers={max(workers, 1)}",
            f"dataset.dataloader_num_workers={workers}",
        ]
    return overrides


def samples_per_row(lengths: list[int], args: dict) -> float:
    """Training samples per sequence the model runs: 1 without packing, else LLaMA-Factory's packing ratio."""
    from benchlib.padding import packed_padding

    if not (args.get("packing") or args.get("neat_packing")):
        return 1.0
    stats = packed_padding(lengths, int(args["cutoff_len"]))
    return stats.samples / stats.rows


@dataclass(frozen=True)
class Throughput:
    """What one run trained and how fast: samples are sentences, rows the sequences (packs) run."""

    name: str
    steps: int
    rows_per_step: int  # per_device_train_batch_size x gradient_accumulation_steps (one device)
    samples_per_row: float
    seconds: float

    @property
    def samples(self) -> float:
        return self.steps * self.rows_per_step * self.samples_per_row

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "steps": self.steps,
            "rows_per_step": self.rows_per_step,
            "samples_per_row": round(self.samples_per_row, 3),
            "samples": round(self.samples, 1),
            "seconds": round(self.seconds, 2),
            "samples_per_second": round(self.samples_per_second, 3),
        }


def throughput(name: str, args: dict, seconds: float, samples_per_row_: float = 1.0) -> Throughput:
    rows = int(args.get("per_device_train_batch_size", 1)) * int(args.get("gradient_accumulation_steps", 1))
    return Throughput(name, int(args["max_steps"]), rows, samples_per_row_, seconds)


def build_random_model(
    out_dir: str | os.PathLike, *, tokenizer_dir: str | os.PathLike, shape: dict, dtype: str = "bfloat16"
) -> Path:
    """A Qwen2ForCausalLM of `shape` with random weights and the given tokenizer, saved to `out_dir`.

    Weights are initialised on the GPU when there is one (seconds instead of minutes for 7B).
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = Qwen2Config(
        **{
            "vocab_size": max(len(tokenizer), shape.get("vocab_size", 0)),
            **{k: v for k, v in shape.items() if k != "vocab_size"},
        },
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
