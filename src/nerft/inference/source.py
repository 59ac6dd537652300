"""Which weights answer for a run: the merged model if `nerft export` made one, else base + adapter.

Every engine and server reads this one resolution, so `nerft predict` and `nerft serve` load the
same weights. The LoRA rank comes from the adapter's own `adapter_config.json`: vLLM refuses an
adapter whose rank exceeds its `max_lora_rank` (16 unless told otherwise), which is how the
tutorials' hand-started servers failed with "LoRA rank 64 is greater than max_lora_rank 16".
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from nerft.errors import ModelError
from nerft.io import locked, read_json, replace_dir, staging_dir
from nerft.models.download import find_model
from nerft.resources import cache_dir
from nerft.runfolder import RunInfo

ADAPTER_CONFIG = "adapter_config.json"
# vllm/config/lora.py: MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class ModelSource:
    """Weights to load: `model` (a folder or hub id), plus a LoRA `adapter` folder or None."""

    model: str
    adapter: Path | None
    template: str

    @property
    def lora_rank(self) -> int | None:
        return lora_rank(self.adapter) if self.adapter is not None else None

    def describe(self, engine: str) -> dict:
        """What an engine loading these weights reports in a predictions summary."""
        return {
            "engine": engine,
            "model": self.model,
            "adapter": str(self.adapter) if self.adapter else None,
            "template": self.template,
        }


def resolve_model(run: RunInfo) -> ModelSource:
    """The weights of `run`: its exported merged model when there is one, else base + adapter."""
    if run.merged_model is not None:
        if not (Path(run.merged_model) / "config.json").is_file():
            raise ModelError(
                f"{run.run_dir}: run.json names merged model {run.merged_model}, which has no config.json",
                hint=f"run `nerft export {run.run_dir}` again",
            )
        return ModelSource(str(run.merged_model), None, run.template)
    if run.adapter_dir is not None:
        return adapter_source(run)
    if (Path(run.run_dir) / "config.json").is_file():  # full or freeze fine-tuning saves the whole model
        return ModelSource(str(run.run_dir), None, run.template)
    raise ModelError(f"{run.run_dir}: run.json names no adapter and the folder holds no model (no config.json)")


def adapter_source(run: RunInfo) -> ModelSource:
    """Base + LoRA adapter of `run`, even when `nerft export` merged them: what a server that
    applies several runs' adapters to one shared base loads."""
    if run.adapter_dir is None:
        raise ModelError(
            f"{run.run_dir}: a {run.finetuning_type} fine-tuning run has no LoRA adapter",
            hint="several runs share one server as LoRA adapters of one base; serve this run alone",
        )
    adapter = Path(run.adapter_dir)
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise ModelError(f"{adapter}: no {ADAPTER_CONFIG} (did training finish?)")
    _check_base_model(run)
    return ModelSource(run.base_model, adapter, run.template)


def merged_copy(source: ModelSource) -> ModelSource:
    """`source` with its LoRA adapter merged into the base weights, saved once in nerft's cache.

    For vLLM on a CPU: its LoRA path computes the adapter beside every layer at every step, 4.7x
    slower than the merged weights with identical answers (docs/PERFORMANCE.md, scoring speed),
    while merging a small model takes seconds. The folder (`$NERFT_CACHE/merged/<key>`) is keyed
    by the base model's path and the adapter's bytes, so a retrained adapter is merged anew and an
    unchanged one never twice; it is built under a lock and appears whole.
    """
    if source.adapter is None:
        return source
    base = find_model(source.model) or Path(source.model)
    key = hashlib.sha256(str(Path(base).resolve()).encode())
    for path in sorted(Path(source.adapter).glob("adapter_*")):
        key.update(path.name.encode())
        key.update(path.read_bytes())
    target = cache_dir() / "merged" / key.hexdigest()[:20]
    if not (target / "config.json").is_file():
        with locked(target):
            if not (target / "config.json").is_file():
                staging = staging_dir(target)
                try:
                    _merge(base, source.adapter, staging)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                replace_dir(staging, target)
    return ModelSource(str(target), None, source.template)


def _merge(base: Path, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)


def _check_base_model(run: RunInfo) -> None:
    base = run.base_model
    looks_local = base.startswith(("/", "./", "../", "~")) or Path(base).exists()
    if looks_local and not Path(base).expanduser().is_dir():
        raise ModelError(
            f"{run.run_dir}: base model {base} does not exist",
            hint="run `nerft download` or fix base_model in run.json",
        )


def lora_rank(adapter_dir: Path) -> int:
    """The largest rank of the adapter (its `r`, or the largest in `rank_pattern`)."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = read_json(path, error=ModelError, what="the adapter's config")
    ranks = [config.get("r")] + list((config.get("rank_pattern") or {}).values())
    ranks = [rank for rank in ranks if isinstance(rank, int) and rank > 0]
    if not ranks:
        raise ModelError(f"{path}: no LoRA rank 'r'")
    return max(ranks)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `rank`."""
    for allowed in VLLM_MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ModelError(
        f"LoRA rank {rank} is larger than vLLM supports ({VLLM_MAX_LORA_RANKS[-1]})",
        hint="merge it with `nerft export`",
    )
