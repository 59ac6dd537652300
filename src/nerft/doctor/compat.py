"""What nerft is tested with, and which torch builds exist: the tables the doctor checks against.

Sources (kept here so an upgrade changes one file):
- LLaMA-Factory 0.9.5: its wheel's Requires-Dist and `llamafactory/extras/misc.py::check_dependencies`
  (transformers, datasets, accelerate, peft, trl). Where the two disagree the narrower range wins,
  because pip enforces Requires-Dist: accelerate <=1.11.0 (not 1.15.0), peft <=0.18.1 (not 0.20.0).
- vLLM: `llamafactory/hparams/parser.py` checks `vllm>=0.4.3,<=0.11.0` for `infer_backend: vllm`.
- torch / torchvision / torchaudio: nerft's pyproject pins them together.
- CUDA builds per torch release: PyTorch's RELEASE.md "Release Compatibility Matrix" (stable and
  experimental wheels on download.pytorch.org). Minimum drivers: NVIDIA CUDA Toolkit release notes,
  Table 3 (Linux x86_64).
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

TESTED_WITH: dict[str, str] = {
    "llamafactory": "==0.9.5",
    "torch": "==2.11.0",
    "torchvision": "==0.26.0",
    "torchaudio": "==2.11.0",
    "transformers": ">=4.55.0,<=5.6.0,!=4.52.0,!=4.57.0",
    "datasets": ">=2.16.0,<=4.0.0",
    "accelerate": ">=1.3.0,<=1.11.0",
    "peft": ">=0.18.0,<=0.18.1",
    "trl": ">=0.18.0,<=0.24.0",
    "modelscope": ">=1.20",
}
"""Required packages and the versions nerft runs with (a version outside is a failure)."""

VLLM_ACCEPTED = ">=0.4.3,<=0.11.0"
"""What LLaMA-Factory 0.9.5 accepts for `infer_backend: vllm` (it refuses others)."""

OPTIONAL_PACKAGES: dict[str, str] = {
    "vllm": "fast GPU inference (`nerft serve --engine vllm`)",
    "flash-attn": "FlashAttention-2 (`flash_attn: fa2`)",
    "liger-kernel": "Liger kernels (`enable_liger_kernel: true`)",
    "bitsandbytes": "QLoRA (`quantization_bit: 4` or 8)",
    "deepspeed": "multi-GPU ZeRO training",
}

BITSANDBYTES_MINIMUM = {4: "0.39.0", 8: "0.37.0"}
"""LLaMA-Factory 0.9.5 `model/model_utils/quantization.py`: bitsandbytes per quantization_bit."""


@dataclass(frozen=True)
class TorchRelease:
    torchvision: str
    torchaudio: str
    cuda: tuple[str, ...]  # CUDA builds on download.pytorch.org, oldest first


TORCH_RELEASES: dict[str, TorchRelease] = {
    "2.11.0": TorchRelease("0.26.0", "2.11.0", ("12.6", "12.8", "13.0")),
    "2.10.0": TorchRelease("0.25.0", "2.10.0", ("12.6", "12.8", "13.0")),
    "2.9.1": TorchRelease("0.24.1", "2.9.1", ("12.6", "12.8", "13.0")),
    "2.9.0": TorchRelease("0.24.0", "2.9.0", ("12.6", "12.8", "13.0")),
    "2.8.0": TorchRelease("0.23.0", "2.8.0", ("12.6", "12.8", "12.9")),
    "2.7.1": TorchRelease("0.22.1", "2.7.1", ("11.8", "12.6", "12.8")),
    "2.7.0": TorchRelease("0.22.0", "2.7.0", ("11.8", "12.6", "12.8")),
    "2.6.0": TorchRelease("0.21.0", "2.6.0", ("11.8", "12.4", "12.6")),
    "2.5.1": TorchRelease("0.20.1", "2.5.1", ("11.8", "12.1", "12.4")),
    "2.5.0": TorchRelease("0.20.0", "2.5.0", ("11.8", "12.1", "12.4")),
    "2.4.1": TorchRelease("0.19.1", "2.4.1", ("11.8", "12.1", "12.4")),
    "2.4.0": TorchRelease("0.19.0", "2.4.0", ("11.8", "12.1", "12.4")),
}

MINIMUM_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.1": "530.30.02",
    "12.4": "550.54.14",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

WHEEL_INDEX = "https://download.pytorch.org/whl"


def public_version(version: str) -> str:
    """`2.11.0+cu130` -> `2.11.0`; anything unparsable is returned unchanged."""
    try:
        return Version(version).public
    except InvalidVersion:
        return version


def local_build(version: str) -> str | None:
    """`2.11.0+cu130` -> `cu130`; None when the version carries no build tag."""
    try:
        return Version(version).local
    except InvalidVersion:
        return None


def cuda_tuple(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def cuda_tag(version: str | None) -> str:
    """CUDA "12.6" -> wheel index tag "cu126"; None (a CPU build) -> "cpu"."""
    if not version:
        return "cpu"
    major, minor = cuda_tuple(version)
    return f"cu{major}{minor}"


def companions(torch_version: str) -> tuple[str, str] | None:
    """The torchvision and torchaudio released with `torch_version`.

    Known releases come from the table; for others the pattern PyTorch has kept since 2.0 is used
    (torchvision 0.(minor+15), torchaudio = torch), e.g. torch 2.12.0 -> 0.27.0 / 2.12.0.
    """
    version = public_version(torch_version)
    if version in TORCH_RELEASES:
        release = TORCH_RELEASES[version]
        return release.torchvision, release.torchaudio
    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    if parsed.major != 2:
        return None
    return f"0.{parsed.minor + 15}.{parsed.micro}", f"2.{parsed.minor}.{parsed.micro}"


def same_release(version_a: str, version_b: str) -> bool:
    """Whether two versions are the same major.minor (patch releases of companions may differ)."""
    try:
        a, b = Version(public_version(version_a)), Version(public_version(version_b))
    except InvalidVersion:
        return False
    return (a.major, a.minor) == (b.major, b.minor)


@dataclass(frozen=True)
class TorchChoice:
    """A torch build to install, as one pip command."""

    torch: str
    cuda: str  # "12.6"
    via_minor_compatibility: bool  # the build is newer than the driver, same CUDA major

    def pip_command(self) -> str:
        return torch_pip_command(self.torch, self.cuda)


def torch_pip_command(torch_version: str, cuda: str | None) -> str:
    """The pip command installing torch with its torchvision and torchaudio for CUDA `cuda` (None: CPU)."""
    pair = companions(torch_version)
    packages = [f"torch=={torch_version}"]
    if pair:
        packages += [f"torchvision=={pair[0]}", f"torchaudio=={pair[1]}"]
    return f"pip install {' '.join(packages)} --index-url {WHEEL_INDEX}/{cuda_tag(cuda)}"


def choose_torch_build(torch_version: str, driver_cuda: str) -> TorchChoice | None:
    """The torch build to install for a driver that supports CUDA `driver_cuda` at most.

    Keeps `torch_version` when one of its builds runs on the driver: the newest build not newer than
    the driver, else the oldest build of the same CUDA major (CUDA >= 11 runs on an older driver of
    its major: "minor-version compatibility"). Otherwise the newest torch in the table that has
    such a build. None when no known build runs on this driver.
    """
    driver = cuda_tuple(driver_cuda)
    wanted = public_version(torch_version)
    ordered = sorted(TORCH_RELEASES, key=Version, reverse=True)
    for candidate in ([wanted] if wanted in TORCH_RELEASES else []) + ordered:
        builds = [cuda_tuple(build) for build in TORCH_RELEASES[candidate].cuda]
        fitting = [build for build in builds if build <= driver]
        if fitting:
            major, minor = max(fitting)
            return TorchChoice(candidate, f"{major}.{minor}", via_minor_compatibility=False)
        same_major = [build for build in builds if build[0] == driver[0] and driver[0] >= 11]
        if same_major:
            major, minor = min(same_major)
            return TorchChoice(candidate, f"{major}.{minor}", via_minor_compatibility=True)
    return None
