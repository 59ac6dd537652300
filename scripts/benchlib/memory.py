"""Time and peak resident memory of one function call, run in a child process of its own.

A fresh interpreter (`python -m benchlib.memory TARGET KWARGS`) imports the target's module,
resets its peak RSS to its current RSS (Linux: `/proc/self/clear_refs`, so what imports allocated
and freed does not hide the call's own peak), notes that baseline, calls the target once with the
keyword arguments, then reports its own peak RSS and the call's duration on a marker line. The
child runs through `nerft.process.run_program`, like every program nerft starts.

The peak is the kernel's high-water mark of the child's own address space (`VmHWM` in
`/proc/self/status`). Neither `getrusage(RUSAGE_CHILDREN)` in the parent (the largest child seen so
far) nor `ru_maxrss` in the child will do: Linux carries `ru_maxrss` across `exec`, so a child
forked from a 40 MB parent reports at least 40 MB whatever it does.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nerft.errors import NerftError

SCRIPTS = Path(__file__).resolve().parent.parent
MARKER = "NERFT_BENCH_MEASURED "


@dataclass(frozen=True)
class MeasuredCall:
    target: str
    seconds: float  # the call itself, without interpreter start-up and imports
    baseline_rss_bytes: int  # RSS after imports, before the call
    peak_rss_bytes: int
    peak_reset: bool  # False where the peak could not be reset: then it includes the imports' peak

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / 2**20

    @property
    def baseline_rss_mib(self) -> float:
        return self.baseline_rss_bytes / 2**20

    @property
    def growth_mib(self) -> float:
        """What the call added to the peak: the part that could grow with the input."""
        return (self.peak_rss_bytes - self.baseline_rss_bytes) / 2**20


def measure_call(target: str, **kwargs) -> MeasuredCall:
    """Call `module:function(**kwargs)` in a child interpreter and measure it. Arguments must be JSON."""
    from nerft.process import run_program

    reports: list[str] = []

    def catch(line: str) -> None:
        if line.startswith(MARKER):
            reports.append(line[len(MARKER) :])

    argv = [sys.executable, "-m", "benchlib.memory", target, json.dumps(kwargs, default=str)]
    # benchlib lives in scripts/, beside the scripts that use it: the child finds it there too
    path = os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))
    code = run_program(argv, env={"PYTHONPATH": path}, stdout_to_stderr=True, on_line=catch, log=lambda message: None)
    if code != 0 or not reports:
        raise NerftError(f"measuring {target} failed: the child exited with {code}")
    report = json.loads(reports[-1])
    return MeasuredCall(
        target, report["seconds"], report["baseline_rss_bytes"], report["peak_rss_bytes"], report["peak_reset"]
    )


def _proc_status_bytes(key: str) -> int | None:
    """A memory line of /proc/self/status (`VmHWM`, `VmRSS`) in bytes; None without /proc."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak RSS: `VmHWM` where /proc has it, else `ru_maxrss`."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def current_rss_bytes() -> int:
    current = _proc_status_bytes("VmRSS")
    return current if current is not None else peak_rss_bytes()


def reset_peak_rss() -> bool:
    """Lower this process's peak RSS to its current RSS (Linux 4.0+); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _child_main(target: str, kwargs_json: str) -> None:
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    kwargs = json.loads(kwargs_json)
    gc.collect()
    reset = reset_peak_rss()
    baseline = current_rss_bytes() if reset else peak_rss_bytes()
    start = time.perf_counter()
    function(**kwargs)
    seconds = time.perf_counter() - start
    report = {
        "seconds": seconds,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_reset": reset,
    }
    print(MARKER + json.dumps(report), file=sys.stderr, flush=True)


if __name__ == "__main__":
    _child_main(*sys.argv[1:3])
