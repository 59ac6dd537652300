"""`take_snapshot` against fake drivers: a fake `nvidia-smi` on PATH (recording the exact command
lines it gets), an old one, a broken one, NVML without nvidia-smi, and a torch that does not import.
No GPU is needed; the snapshot must never crash."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from nerft.doctor.checks import FAIL, check_torch_cuda
from nerft.doctor.snapshot import take_snapshot
from nerft.machine import GpuInfo

HEADER = """\
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |
+---------------------------------------------------------------------------------------+
"""


def fake_nvidia_smi(
    tmp_path: Path,
    monkeypatch,
    *,
    header: str = HEADER,
    header_code: int = 0,
    rows: str = "0, NVIDIA A100-SXM4-80GB, 81920, 80000, 8.0\n",
    knows_compute_cap: bool = True,
) -> Path:
    """An `nvidia-smi` on PATH that answers like the real one and logs its arguments as JSON lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    script = bin_dir / "nvidia-smi"
    script.write_text(f"""#!{sys.executable}
import json, sys
with open({str(calls)!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if len(sys.argv) == 1:
    sys.stdout.write({header!r})
    sys.exit({header_code})
if "compute_cap" in sys.argv[1] and not {knows_compute_cap!r}:
    sys.stdout.write('Field "compute_cap" is not a valid field to query.\\n')
    sys.exit(2)
rows = {rows!r}
if "compute_cap" not in sys.argv[1]:
    rows = "".join(", ".join(line.split(", ")[:4]) + "\\n" for line in rows.splitlines())
sys.stdout.write(rows)
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def calls_of(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_driver_and_gpus_come_from_nvidia_smi(tmp_path, monkeypatch):
    calls = fake_nvidia_smi(tmp_path, monkeypatch)
    snapshot = take_snapshot()
    assert (snapshot.driver_version, snapshot.driver_cuda, snapshot.driver_error) == ("535.104.05", "12.2", None)
    assert snapshot.gpus == [GpuInfo(0, "NVIDIA A100-SXM4-80GB", 81920, 80000, "8.0")]
    assert calls_of(calls) == [
        [],
        ["--query-gpu=index,name,memory.total,memory.free,compute_cap", "--format=csv,noheader,nounits"],
    ]
    # this machine's torch is a cu130 build: on that driver the check fails with the cu126 fix
    if snapshot.torch_cuda_build == "13.0":
        check = check_torch_cuda(snapshot)
        assert check.status == FAIL and "--index-url https://download.pytorch.org/whl/cu126" in check.fix


def test_an_old_nvidia_smi_without_compute_cap_is_asked_again_without_it(tmp_path, monkeypatch):
    calls = fake_nvidia_smi(
        tmp_path, monkeypatch, knows_compute_cap=False, rows="0, Tesla V100-SXM2-16GB, 16384, 16000, 7.0\n"
    )
    snapshot = take_snapshot()
    assert snapshot.gpus == [GpuInfo(0, "Tesla V100-SXM2-16GB", 16384, 16000, None)]
    assert [call[0] for call in calls_of(calls)[1:]] == [
        "--query-gpu=index,name,memory.total,memory.free,compute_cap",
        "--query-gpu=index,name,memory.total,memory.free",
    ]


def test_an_nvidia_smi_that_cannot_reach_the_driver_is_reported_not_raised(tmp_path, monkeypatch):
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    fake_nvidia_smi(tmp_path, monkeypatch, header=message, header_code=9)
    snapshot = take_snapshot()
    assert snapshot.driver_cuda is None and snapshot.gpus == []
    assert snapshot.driver_error == "nvidia-smi failed: " + message.strip()


def test_nvml_answers_when_nvidia_smi_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    memory = types.SimpleNamespace(total=24564 * 2**20, free=24000 * 2**20)
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54.14",
        nvmlSystemGetCudaDriverVersion=lambda: 12040,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetName=lambda handle: "NVIDIA GeForce RTX 4090",
        nvmlDeviceGetMemoryInfo=lambda handle: memory,
        nvmlDeviceGetCudaComputeCapability=lambda handle: (8, 9),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    snapshot = take_snapshot()
    assert (snapshot.driver_version, snapshot.driver_cuda, snapshot.driver_error) == ("550.54.14", "12.4", None)
    assert snapshot.gpus == [GpuInfo(0, "NVIDIA GeForce RTX 4090", 24564, 24000, "8.9")]


def test_no_driver_at_all(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    snapshot = take_snapshot()
    assert snapshot.driver_error == "nvidia-smi not found" and snapshot.driver_cuda is None


def test_a_torch_that_does_not_import_is_recorded(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)
    snapshot = take_snapshot()
    assert (
        snapshot.torch_version is None
        and snapshot.torch_error == "ModuleNotFoundError: import of torch halted; None in sys.modules"
    )
    assert check_torch_cuda(snapshot).status == FAIL
    assert snapshot.packages["llamafactory"] == "0.9.5"  # the rest of the snapshot is still there


@pytest.fixture(autouse=True)
def _quiet_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path / "cache"))
