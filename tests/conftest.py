"""Shared fixtures. Tests never download anything; `../shared` is optional and skipped when absent."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on the 2 cores (pyproject's `-n 2`): one thread each, in every process they
    # start too (servers, llamafactory-cli). OpenMP threads that spin while another process holds the
    # other core make a model many times slower (`one_thread`), and equal thread counts give equal
    # arithmetic, so answers compared across processes stay identical.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NERFT_SHARED") or ROOT.parent / "shared")  # NERFT_SHARED: a checkout elsewhere
SAMPLE = ROOT / "data" / "sample"
sys.path.insert(0, str(ROOT / "scripts"))  # benchlib: what the benchmarks measure, beside the scripts that time it


def load_script(name: str):
    """A script of scripts/ as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (real CLUENER data and the Qwen2 tokenizer live there)")
    return SHARED


@pytest.fixture(scope="session")
def cluener_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "cluener"
    if not (path / "train.jsonl").is_file():
        pytest.skip(f"{path} has no CLUENER data")
    return path


@pytest.fixture(scope="session")
def qwen2_tokenizer_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "tokenizers" / "qwen2"
    if not (path / "vocab.json").is_file():
        pytest.skip(f"{path} has no Qwen2 tokenizer")
    return path


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2 chat model with its own tokenizer, built once per test session: the very
    folder `nerft:tiny-qwen2` names in the session's NERFT_CACHE (`session_cache`, `learned_run`),
    so the end-to-end tests and the engine tests share one build. Nothing may write into it."""
    from nerft.models.tiny import build_tiny_qwen2

    return build_tiny_qwen2(session_cache_dir(tmp_path_factory) / "models" / "nerft" / "tiny-qwen2")


def session_root(tmp_path_factory) -> Path:
    """The temporary folder of the whole test session: under pytest-xdist, the one its workers
    share (each worker's own is a folder of it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def session_cache_dir(tmp_path_factory) -> Path:
    """The NERFT_CACHE of the whole test session, shared by its workers: what nerft builds there
    (the tiny model, the converted SmolLM2, merged models) it builds under a lock, atomically."""
    return session_root(tmp_path_factory) / "nerft-cache"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once per test session, whichever worker asks first (the others wait for
    it, under a lock); the folder it filled, which nothing may write into."""
    from filelock import FileLock

    folder = session_root(tmp_path_factory) / name
    done = folder.parent / f"{name}.done"
    with FileLock(str(folder.parent / f"{name}.lock")):
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model) -> Path:
    """A run folder as `nerft train` leaves it: run.json + a LoRA adapter (rank 8) on the tiny model.

    The adapter is random and large enough (lora_B ~ N(0, 0.2)) that answers differ from sentence
    to sentence, so comparing two engines' answers means something.
    """
    return random_lora_run(tmp_path_factory.mktemp("runs") / "tiny-lora", tiny_model, seed=0, rank=8)


@pytest.fixture(scope="session")
def other_tiny_run(tmp_path_factory, tiny_model) -> Path:
    """A second run like `tiny_run` on the same tiny model, with another random adapter of rank 16
    (another seed): two runs one server can serve side by side."""
    return random_lora_run(tmp_path_factory.mktemp("runs") / "tiny-lora-b", tiny_model, seed=1, rank=16)


def random_lora_run(run_dir: Path, base: Path, *, seed: int, rank: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nerft.runfolder import RunInfo, write_run

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        task_type="CAUSAL_LM",
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2)
    model.save_pretrained(run_dir)
    write_run(RunInfo(run_dir=run_dir, base_model=str(base), template="qwen", adapter_dir=run_dir))
    return run_dir


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory) -> Path:
    """The quick start's run, trained once per test session: the real `nerft train tiny-cpu` (real
    `llamafactory-cli train`) on the bundled sample. Engines, servers and pages that need a model
    that answers sensibly use it; nothing may write into it (copy it first). What the command
    printed is kept beside it, in train.stdout and train.stderr."""
    from typer.testing import CliRunner

    from nerft.cli.main import app

    def train(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NERFT_CACHE", str(session_cache_dir(tmp_path_factory)))
            patch.chdir(ROOT)
            result = CliRunner().invoke(app, ["train", "tiny-cpu", "--output-dir", str(folder / "run")])
        assert result.exit_code == 0, result.stderr[-3000:]
        (folder / "train.stdout").write_text(result.stdout, encoding="utf-8")
        (folder / "train.stderr").write_text(result.stderr, encoding="utf-8")

    return built_once(tmp_path_factory, "learned", train) / "run"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine, two spinning threads per process make the tiny
    model 40 times slower (0.3 s against 15 s for 4 x 60 tokens)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def session_cache(tmp_path_factory, monkeypatch):
    """One NERFT_CACHE for the whole test session (the tiny model and LLaMA-Factory's argument
    names are built once), and the repository root as the working folder (the presets' data paths
    are relative to it)."""
    monkeypatch.setenv("NERFT_CACHE", str(session_cache_dir(tmp_path_factory)))
    monkeypatch.chdir(ROOT)


def start_nerft_serve(args: list[str], log: Path, *, env: dict | None = None, timeout: float = 300.0):
    """`nerft serve ARGS --json` as a child process, once it prints that it is ready: (process,
    its JSON line as a dict). The test fails with the end of the server's log if it never is."""
    import json
    import os
    import select
    import subprocess
    import sys
    import time

    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "nerft", "serve", *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env or {**os.environ},
        )
    deadline = time.monotonic() + timeout
    line = ""
    while not line and time.monotonic() < deadline and process.poll() is None:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail(f"nerft serve {' '.join(args)} did not become ready; its log ends with:\n{log.read_text()[-3000:]}")
    return process, json.loads(line)


class FakeLauncher:
    """Stands in for `process.run_program`: records (argv, added environment), launches nothing,
    and returns `code` as llamafactory-cli's exit code."""

    def __init__(self, code: int = 0):
        self.code = code
        self.calls = []

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), dict(kwargs.get("env") or {})))
        return self.code


# The files that take minutes (seconds of one pytest-xdist worker in a fresh clone on 2 cores),
# begun first, longest first: two workers then end together instead of one finishing a long file
# while the other waits. pyproject's `--no-loadscope-reorder` keeps this order (xdist's own puts the
# files with the most tests first, whatever they cost).
LONG_FILES = {
    "test_smollm2.py": 830,
    "test_vllm_real.py": 330,
    "test_ray.py": 290,
    "test_multiprocess_e2e.py": 200,
    "test_kill.py": 140,
    "test_serve.py": 110,
    "test_concurrency.py": 90,
    "test_wheel.py": 80,
    "test_plan.py": 80,
    "test_label_studio.py": 70,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -LONG_FILES.get(item.path.name, 0))  # stable: the others keep their order
