"""The hardware a figure was measured on, in one line, for the benchmark reports."""

from __future__ import annotations

import os

from nerft.machine import cpu_name, memory_bytes, query_gpus


def describe_machine() -> dict:
    """CPU model and usable cores (from lscpu and the scheduler), memory, and GPUs when nvidia-smi answers."""
    cpu = cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    total, _ = memory_bytes()
    memory_gib = round(total / 2**30, 1) if total else None
    gpus = [f"{gpu.name}, {gpu.memory_total_mib} MiB" for gpu in query_gpus()]  # as nvidia-smi's csv wrote them
    # Other work on the machine slows a benchmark down: the load when it ran goes with its figures.
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": cores, "memory_gib": memory_gib, "gpus": gpus, "load_average_1min": load}


def machine_line(machine: dict | None = None) -> str:
    machine = machine or describe_machine()
    line = f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB RAM"
    line += f", GPU: {'; '.join(machine['gpus'])}" if machine["gpus"] else ", no GPU"
    if machine.get("load_average_1min") is not None:
        line += f" (load average {machine['load_average_1min']} at start)"
    return line
