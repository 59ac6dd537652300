#!/usr/bin/env python3
"""GPU acceptance check: training and inference speed on a lent GPU machine, as one JSON of figures.

One command on the device (it fits in 10 minutes on one H200):

    python3 scripts/gpu_check.py run                    # the figures, in $OUT/gpu_check.json

It measures, through nerft's benchmark scripts (scripts/bench_train.py, scripts/bench_infer.py):
- LoRA training samples/s of the tutorials' config and prompt format against `nerft train qwen7b`,
  the same steps, on a randomly initialised Qwen2.5-7B-shaped model, through the real
  `llamafactory-cli train`;
- hf generation, one sentence at a time against batches, on the same random model.

The device has CUDA torch, a transformers too new for LLaMA-Factory 0.9.5, peft and accelerate, and
no network. So `run` makes a venv with `--system-site-packages` (the device's CUDA torch is kept)
and installs LLaMA-Factory, a transformers it accepts and whatever else is missing from wheels
carried beside the repository in `.whl/` (git-ignored), with `--no-index`. Those wheels, the Qwen2
tokenizer and CLUENER train/dev are put there beforehand, on a machine with PyPI:

    .venv/bin/python scripts/gpu_check.py fetch --python 3.11     # then carry .whl (<= 64 MiB)

`probe` (on the device) says which requirements it already satisfies, so that `fetch --skip ...`
can leave those out when the whole set would not fit in one carry. `run --tiny` checks the same
path on a CPU with the tiny model shape (a few steps, minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
CARRIED_DATA = WHEELS / "data"
VENV = ROOT / ".venv-gpu"
SHARED = ROOT.parent / "shared" / "data"
CARRY_LIMIT_MIB = 64

# What `llamafactory-cli train` imports on the way to a LoRA SFT run (measured here by hiding
# every other package), pinned where LLaMA-Factory 0.9.5 or the device's torch 2.11 need it.
# Installed with --no-deps: a requirement the device already satisfies is left alone.
REQUIREMENTS = [
    "llamafactory==0.9.5",
    "transformers==5.6.0",  # LLaMA-Factory 0.9.5 accepts <= 5.6.0; the device has 5.17
    "torchaudio==2.11.0",  # imported at start-up; built for the device's torch 2.11
    "trl==0.24.0",
    "datasets==4.0.0",
    "pyarrow>=15",
    "pandas>=2",
    "python-dateutil",
    "pytz",
    "tzdata",
    "dill>=0.3.0,<0.3.9",
    "multiprocess<0.70.17",
    "xxhash",
    "fsspec[http]>=2023.1.0,<=2025.3.0",
    "aiohttp",
    "aiosignal",
    "aiohappyeyeballs",
    "frozenlist",
    "multidict",
    "yarl",
    "propcache",
    "attrs",
    "requests",
    "urllib3",
    "charset-normalizer",
    "idna",
    "certifi",
    "omegaconf",
    "pydantic>=2",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "matplotlib>=3.7.0",  # plot_loss, which both configs set
    "contourpy",
    "cycler",
    "fonttools",
    "kiwisolver",
    "pyparsing",
    "pillow",
    "sentencepiece",
    "protobuf",
    "pyyaml",
    "psutil",
]
# fetch: the version of each loose requirement as it runs here with llamafactory 0.9.5
FETCH_PINS = {
    "pyarrow": "26.0.1",
    "pandas": "2.3.3",
    "dill": "0.3.8",
    "multiprocess": "0.70.16",
    "fsspec": "2025.3.0",
    "matplotlib": "3.11.2",
    "pydantic": "2.12.3",
    "pydantic-core": "2.41.4",
}


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def requirement_name(requirement: str) -> str:
    for mark in "=<>![ ":
        requirement = requirement.split(mark)[0]
    return requirement


def selected(requirements: list[str], *, only: list[str] | None, skip: list[str]) -> list[str]:
    names = lambda values: {value.lower().replace("_", "-") for value in values}  # noqa: E731
    only_names, skip_names = names(only or []), names(skip)
    chosen = [req for req in requirements if requirement_name(req).lower() not in skip_names]
    return [req for req in chosen if not only_names or requirement_name(req).lower() in only_names]


def fetch_spec(requirement: str) -> str:
    """The exact version `fetch` downloads for a requirement (its pin, else the version used here)."""
    name = requirement_name(requirement)
    if name in FETCH_PINS:
        return f"{name}=={FETCH_PINS[name]}"
    return requirement.replace("[http]", "")


def folder_mib(path: Path) -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 2**20


def fetch(args) -> int:
    """Download the wheels for the device's Python and copy the benchmark data into .whl/."""
    WHEELS.mkdir(exist_ok=True)
    specs = [fetch_spec(req) for req in selected(REQUIREMENTS, only=args.only, skip=args.skip)]
    for version in args.python:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--dest",
            str(WHEELS),
            "--only-binary=:all:",
            "--python-version",
            version,
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            *specs,
        ]
        log(f"downloading {len(specs)} wheels for Python {version}")
        if subprocess.run(command).returncode != 0:
            return 1
    CARRIED_DATA.mkdir(exist_ok=True)
    for source, target in (
        (args.shared / "cluener", CARRIED_DATA / "cluener"),
        (args.shared / "tokenizers" / "qwen2", CARRIED_DATA / "qwen2"),
    ):
        if not source.is_dir():
            log(f"error: {source}: not found (--shared names the folder with cluener/ and tokenizers/qwen2/)")
            return 1
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("test.jsonl"))
    size = folder_mib(WHEELS)
    log(
        f"{WHEELS}: {size:.1f} MiB"
        + (f" (over the {CARRY_LIMIT_MIB} MiB a call carries: see probe and --skip)" if size > CARRY_LIMIT_MIB else "")
    )
    return 0 if size <= CARRY_LIMIT_MIB else 2


def probe_requirements(python: str) -> dict:
    """{requirement: installed version or None} as seen by `python`, plus its version."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "from packaging.requirements import Requirement\n"
        "out = {}\n"
        "for line in json.loads(sys.argv[1]):\n"
        "    req = Requirement(line)\n"
        "    try:\n"
        "        version = m.version(req.name)\n"
        "    except m.PackageNotFoundError:\n"
        "        version = None\n"
        "    out[line] = {'installed': version, 'satisfied': version is not None and req.specifier.contains(version, prereleases=True)}\n"
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'requirements': out}))\n"
    )
    result = subprocess.run([python, "-c", code, json.dumps(REQUIREMENTS)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def probe(args) -> int:
    found = probe_requirements(sys.executable)
    missing = [req for req, state in found["requirements"].items() if not state["satisfied"]]
    satisfied = [requirement_name(req) for req, state in found["requirements"].items() if state["satisfied"]]
    print(json.dumps({**found, "missing": missing}, indent=2))
    log(
        f"Python {found['python']}; {len(missing)} requirements to carry; fetch them with: "
        f"scripts/gpu_check.py fetch --python {found['python']}"
        + (f" --skip {' '.join(satisfied)}" if satisfied else "")
    )
    return 0


def make_venv(python: str) -> Path:
    """The check's venv on top of the device's packages (its CUDA torch), with the carried wheels."""
    venv_python = VENV / "bin" / "python"
    if not venv_python.is_file():
        log(f"creating {VENV} (--system-site-packages: the device's torch is kept)")
        subprocess.run([python, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    found = probe_requirements(str(venv_python))["requirements"]
    missing = [req for req, state in found.items() if not state["satisfied"]]
    if missing:
        log(f"installing {len(missing)} packages from {WHEELS}: {', '.join(map(requirement_name, missing))}")
        command = [
            str(venv_python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(WHEELS),
            "--no-deps",
            *missing,
        ]
        if subprocess.run(command).returncode != 0:
            raise SystemExit(
                f"gpu_check: error: {WHEELS} lacks wheels for this machine (above); on a machine with PyPI run "
                f"`scripts/gpu_check.py fetch --python {probe_requirements(str(venv_python))['python']}` and carry .whl"
            )
    check = "import llamafactory.train.tuner, datasets, trl, peft, torch; print(torch.__version__, torch.cuda.is_available())"
    result = subprocess.run([str(venv_python), "-c", check], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"gpu_check: error: LLaMA-Factory does not import in {VENV}:\n{result.stderr[-3000:]}")
    log(f"{VENV}: torch {result.stdout.strip()} (version, CUDA)")
    return venv_python


def bench(venv_python: Path, script: str, options: list[str], env: dict) -> tuple[dict | None, int, float]:
    """Run one of nerft's benchmark scripts with --json in the venv: (its result, exit code, seconds)."""
    start = time.monotonic()
    result = subprocess.run(
        [str(venv_python), str(ROOT / "scripts" / script), *options, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    seconds = round(time.monotonic() - start, 1)
    try:
        return json.loads(result.stdout), result.returncode, seconds
    except json.JSONDecodeError:
        return None, result.returncode, seconds


def run(args) -> int:
    data = args.data
    for needed in (data / "cluener" / "train.jsonl", data / "cluener" / "dev.jsonl", data / "qwen2" / "vocab.json"):
        if not needed.is_file():
            log(f"error: {needed}: not found (scripts/gpu_check.py fetch copies the data into {CARRIED_DATA})")
            return 1
    venv_python = make_venv(args.python_for_venv)
    if args.install_only:
        return 0
    out = Path(args.out or os.environ.get("OUT") or ROOT / "gpu-check-out")
    out.mkdir(parents=True, exist_ok=True)
    # nerft from this checkout, its caches and the random model in a scratch folder (not under $OUT)
    work = Path(tempfile.mkdtemp(prefix="nerft-gpu-check-", dir=args.scratch))
    python_path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "NERFT_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    shape = ["--shape", "tiny", "--workers", "0"] if args.tiny else []
    figures: dict = {
        "check": {"tiny": args.tiny, "steps": args.steps, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    }
    log(f"training: tutorial vs nerft, {args.steps} steps each ({'tiny' if args.tiny else 'Qwen2.5-7B'} shape)")
    train_options = [
        "--work",
        str(work / "train"),
        "--steps",
        str(args.steps),
        "--tokenizer",
        str(data / "qwen2"),
        "--train",
        str(data / "cluener" / "train.jsonl"),
        "--dev",
        str(data / "cluener" / "dev.jsonl"),
        *shape,
    ]
    figures["training"], code, figures["check"]["training_seconds"] = bench(
        venv_python, "bench_train.py", train_options, env
    )
    if figures["training"] is None:
        log(f"error: scripts/bench_train.py failed (exit code {code}); its log is above")
        return 1
    log(
        f"inference: hf, one sentence at a time vs batches of {', '.join(map(str, args.batch_size))}, {args.limit} dev sentences"
    )
    infer_options = [
        "--model",
        str(work / "train" / "model"),
        "--template",
        "qwen",
        "--prompt",
        "compact",
        "--dev",
        str(data / "cluener" / "dev.jsonl"),
        "--limit",
        str(args.limit),
    ]
    for size in args.batch_size:
        infer_options += ["--batch-size", str(size)]
    # exit code 1: some batched answers differ from the sequential ones (bf16 padding); recorded, not fatal
    figures["inference"], code, figures["check"]["inference_seconds"] = bench(
        venv_python, "bench_infer.py", infer_options, env
    )
    if figures["inference"] is None:
        log(f"error: scripts/bench_infer.py failed (exit code {code}); its log is above")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    target = out / "gpu_check.json"
    target.write_text(json.dumps(figures, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    train_result, infer_result = figures["training"], figures["inference"]
    best = max(infer_result["batched"], key=lambda run: run["speedup"] or 0)
    print(f"training samples/s, nerft / tutorial: {train_result['speedup']:.2f}x")
    print(
        f"hf generation, batch {best['batch_size']} / sequential: {best['speedup']:.2f}x ({best['identical']}/{best['requests']} identical)"
    )
    print(f"figures: {target}")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download the wheels and copy the data into .whl/ (needs PyPI)")
    fetch_parser.add_argument("--python", nargs="+", default=["3.11"], help="Python version(s) of the device")
    fetch_parser.add_argument("--skip", nargs="*", default=[], help="requirements the device already has (see probe)")
    fetch_parser.add_argument("--only", nargs="*", help="download only these requirements")
    fetch_parser.add_argument("--shared", type=Path, default=SHARED, help="folder with cluener/ and tokenizers/qwen2/")
    commands.add_parser("probe", help="which requirements this machine already satisfies (JSON)")
    run_parser = commands.add_parser("run", help="install from .whl/ into .venv-gpu and measure")
    run_parser.add_argument("--tiny", action="store_true", help="the tiny model shape, a CPU check of the whole path")
    run_parser.add_argument("--steps", type=int, help="optimizer steps of each training run (default 16; --tiny: 2)")
    run_parser.add_argument("--limit", type=int, help="dev sentences to generate for (default 24; --tiny: 16)")
    run_parser.add_argument("--batch-size", type=int, action="append", help="batched pass(es) (default: 8 and 24)")
    run_parser.add_argument(
        "--data", type=Path, default=CARRIED_DATA, help="folder with cluener/ and qwen2/ (fetch fills .whl/data)"
    )
    run_parser.add_argument("--out", type=Path, help="where gpu_check.json goes (default: $OUT, else ./gpu-check-out)")
    run_parser.add_argument("--scratch", type=Path, help="folder for the random model and runs (default: the temp dir)")
    run_parser.add_argument(
        "--install-only", action="store_true", help="only make the venv (a first call when .whl is split)"
    )
    run_parser.add_argument(
        "--python-for-venv", default=sys.executable, help="interpreter whose packages the venv sees"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        # sized so that the whole check fits in 10 minutes on one H200 (the random 7B model never
        # stops early: every sentence generates its full token budget)
        args.steps = args.steps or (2 if args.tiny else 16)
        args.limit = args.limit or (16 if args.tiny else 24)
        args.batch_size = args.batch_size or [8, 24]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return {"fetch": fetch, "probe": probe, "run": run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
