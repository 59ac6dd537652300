"""What this machine can run: CUDA, bf16, FlashAttention-2, Liger kernels, DeepSpeed, bitsandbytes.

`flash_attn: auto` and `enable_liger_kernel: auto` are resolved here, once, and the choice and its
reason are reported, so a run never silently falls back to a slower path.

Neat packing (LLaMA-Factory's `neat_packing`) works with every attention implementation: with
FlashAttention-2 the collator passes position ids that restart at each packed sample (and needs a
batch of one pack); with SDPA and eager it passes a block-diagonal 4D mask. Both keep packed
samples from attending to each other; the SDPA/eager path also runs on a CPU
(tests/test_train_packing.py checks it on the tiny model).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from nerft.errors import ConfigError, EnvironmentProblem

OPTIONAL_PACKAGES = {
    "flash_attn": "flash-attn",
    "liger_kernel": "liger-kernel",
    "deepspeed": "deepspeed",
    "bitsandbytes": "bitsandbytes",
}


@dataclass(frozen=True)
class Machine:
    cuda: bool
    gpu_count: int = 0
    bf16: bool = False
    gpu_name: str | None = None
    packages: frozenset[str] = field(default_factory=frozenset)

    def has(self, module: str) -> bool:
        return module in self.packages

    def describe(self) -> str:
        if not self.cuda:
            return "CPU (no CUDA)"
        return f"{self.gpu_count} x {self.gpu_name or 'CUDA GPU'}" + ("" if self.bf16 else " (no bf16)")


def detect_machine() -> Machine:
    import torch

    packages = frozenset(module for module in OPTIONAL_PACKAGES if importlib.util.find_spec(module) is not None)
    if not torch.cuda.is_available():
        return Machine(cuda=False, packages=packages)
    return Machine(
        cuda=True,
        gpu_count=torch.cuda.device_count(),
        bf16=torch.cuda.is_bf16_supported(),
        gpu_name=torch.cuda.get_device_name(0),
        packages=packages,
    )


def choose_attention(requested: str, machine: Machine) -> tuple[str, str]:
    """LLaMA-Factory's `flash_attn` value for this machine, and why."""
    if requested != "auto":
        return requested, "set in the config"
    if machine.cuda and machine.has("flash_attn"):
        return "fa2", "FlashAttention-2 is installed"
    reason = "no CUDA" if not machine.cuda else "flash-attn is not installed (pip install flash-attn)"
    return "sdpa", reason


def choose_liger(requested: bool | str, machine: Machine) -> tuple[bool, str]:
    """Whether to enable Liger's fused kernels (RMSNorm, RoPE, SwiGLU, fused cross-entropy), and why."""
    if requested != "auto":
        return bool(requested), "set in the config"
    if not machine.cuda:
        return False, "no CUDA (Liger's kernels are Triton GPU kernels)"
    if not machine.has("liger_kernel"):
        return False, "liger-kernel is not installed (pip install liger-kernel)"
    return True, "liger-kernel is installed"


def check_precision(*, bf16: bool, fp16: bool, machine: Machine) -> None:
    """Refuse mixed precision this machine cannot run (LLaMA-Factory fails on CPU with it)."""
    if not machine.cuda and (bf16 or fp16):
        flag = "bf16" if bf16 else "fp16"
        raise ConfigError(
            f"train.{flag} is true but this machine has no CUDA GPU: LLaMA-Factory cannot train in {flag} on a CPU",
            hint=f"add --set train.{flag}=false to train in float32 here",
        )
    if machine.cuda and bf16 and not machine.bf16:
        raise ConfigError(
            f"train.bf16 is true but {machine.gpu_name or 'this GPU'} has no bf16 (it needs an Ampere or newer GPU)",
            hint="add --set train.bf16=false --set train.fp16=true",
        )


def check_packages(*, flash_attn: str, liger: bool, deepspeed: bool, quantization_bit: int | None, machine: Machine) -> None:
    """A package the run needs but this machine lacks, reported before LLaMA-Factory loads a model."""
    needed = []
    if flash_attn == "fa2" and not machine.has("flash_attn"):
        needed.append("flash_attn")
    if liger and not machine.has("liger_kernel"):
        needed.append("liger_kernel")
    if deepspeed and not machine.has("deepspeed"):
        needed.append("deepspeed")
    if quantization_bit is not None and not machine.has("bitsandbytes"):
        needed.append("bitsandbytes")
    if needed:
        names = " ".join(OPTIONAL_PACKAGES[module] for module in needed)
        raise EnvironmentProblem(f"this run needs {names}, which is not installed", hint=f"pip install {names}")
    if (flash_attn in ("fa2", "fa3") or liger or quantization_bit is not None) and not machine.cuda:
        raise ConfigError("FlashAttention, Liger kernels and 4/8-bit quantization need a CUDA GPU, and this machine has none")
