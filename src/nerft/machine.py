"""What this machine has, asked of the system: its GPUs (nvidia-smi), RAM, free disk, CPU model.

The probes the doctor's snapshot and the benchmark reports share; none of them raises for a
missing or broken tool (an empty answer instead). Which training a machine can run is
`nerft.training.kernels.Machine`'s, and the doctor's judgement of it is `nerft.doctor`'s.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nerft.process import read_program

NVIDIA_SMI_TIMEOUT = 20  # seconds; a wedged driver can make nvidia-smi hang


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int | None = None
    compute_capability: str | None = None  # "8.0"; None when nvidia-smi is too old to say

    @property
    def memory_total_bytes(self) -> int:
        return self.memory_total_mib * 2**20


GPU_QUERY = ("index", "name", "memory.total", "memory.free", "compute_cap")


def query_gpus(program: str | None = None) -> list[GpuInfo]:
    """The GPUs `nvidia-smi` lists (none when it is absent or fails): the one query of them that
    the doctor and the benchmark reports share."""
    program = program or shutil.which("nvidia-smi")
    if program is None:
        return []
    for fields in (GPU_QUERY, GPU_QUERY[:-1]):  # compute_cap is unknown to drivers before 510
        try:
            answer = read_program(
                [program, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                timeout=NVIDIA_SMI_TIMEOUT,
            )
        except OSError:
            return []
        if answer.returncode == 0:
            return parse_gpu_query(answer.stdout)
    return []


def parse_nvidia_smi_header(text: str) -> tuple[str | None, str | None]:
    """`| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |` -> versions."""
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_gpu_query(text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total,memory.free[,compute_cap]` (MiB)."""
    gpus = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) < 4 or not cells[0].isdigit():
            continue
        gpus.append(
            GpuInfo(
                index=int(cells[0]),
                name=cells[1],
                memory_total_mib=_int(cells[2]) or 0,
                memory_free_mib=_int(cells[3]),
                compute_capability=cells[4] if len(cells) > 4 and cells[4][:1].isdigit() else None,
            )
        )
    return gpus


def memory_bytes() -> tuple[int | None, int | None]:
    """Total and available RAM in bytes (None when unknown)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total, available = (int(fields[key].split()[0]) * 1024 for key in ("MemTotal", "MemAvailable"))
        return total, available
    except (OSError, KeyError, ValueError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, None
    except (ValueError, OSError, AttributeError):
        return None, None


def free_bytes(path: Path) -> int | None:
    """Free space on the disk that holds `path` (or would hold it: its nearest existing parent)."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def lscpu_fields(text: str) -> dict[str, str]:
    """`lscpu`'s `Key: value` lines as a dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_name() -> str:
    """The CPU model as lscpu names it (with the hypervisor of a guest), else what platform says."""
    cpu = platform.processor() or platform.machine()
    if shutil.which("lscpu"):
        try:
            fields = lscpu_fields(read_program(["lscpu"]).stdout)
        except OSError:
            return cpu
        cpu = fields.get("Model name", cpu)
        if fields.get("Hypervisor vendor"):
            cpu += f" ({fields['Hypervisor vendor']} guest)"
    return cpu


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None
