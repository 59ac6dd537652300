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

KERNEL_MODULES = {
    "flash_attn": "flash-attn",
    "liger_kernel": "liger-kernel",
    "deepspeed": "deepspeed",
    "bitsandbytes": "bitsandbytes",
}
"""The optional modules a training may need, and the distribution that installs each."""

MIN_BF16_CAPABILITY = (8, 0)  # bf16 arithmetic needs Ampere or newer


def supports_bf16(capabilities: list[tuple[int, int] | None]) -> bool:
    """The one rule for bf16: every GPU of compute capability 8.0 or newer (an unknown one is
    given the benefit of the doubt: an old nvidia-smi does not report it)."""
    return bool(capabilities) and all(
        capability is None or capability >= MIN_BF16_CAPABILITY for capability in capabilities
    )


def parse_capability(text: str | None) -> tuple[int, int] | None:
    """ "8.6" -> (8, 6); None when unknown or unreadable."""
    try:
        major, minor = (text or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


@dataclass(frozen=True)
class Machine:
    cuda: bool
    gpu_count: int = 0
    bf16: bool = False
    gpu_name: str | None = None
    compute_capability: str | None = None  # of the first GPU: "7.5"
    packages: frozenset[str] = field(default_factory=frozenset)

    def has(self, module: str) -> bool:
        return module in self.packages

    def describe(self) -> str:
        if not self.cuda:
            return "CPU (no CUDA)"
        return f"{self.gpu_count} x {self.gpu_name or 'CUDA GPU'}" + ("" if self.bf16 else " (no bf16)")


def detect_machine() -> Machine:
    import torch

    packages = frozenset(module for module in KERNEL_MODULES if importlib.util.find_spec(module) is not None)
    if not torch.cuda.is_available():
        return Machine(cuda=False, packages=packages)
    capabilities = [torch.cuda.get_device_capability(index) for index in range(torch.cuda.device_count())]
    return Machine(
        cuda=True,
        gpu_count=len(capabilities),
        bf16=supports_bf16(capabilities),
        gpu_name=torch.cuda.get_device_name(0),
        compute_capability="{}.{}".format(*capabilities[0]),
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
