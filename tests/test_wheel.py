"""nerft as a wheel: built, installed outside the checkout, and run from another folder.

The build backend (setuptools >= 77) lives in `.venv-build` (scripts/setup.sh makes it); the
installed wheel runs on this venv's Python with the shared packages, with the checkout's nerft
(editable or on PYTHONPATH) out of sight: every preset, DeepSpeed config and the sample must come
from the wheel itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

BUILD_PYTHON = ROOT / ".venv-build" / "bin" / "python"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if not BUILD_PYTHON.is_file():
        pytest.skip(f"{BUILD_PYTHON} is absent: run scripts/setup.sh")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = work / "wheels"
    subprocess.run(
        [
            str(BUILD_PYTHON),
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        cwd=work,
    )
    [wheel] = wheels.glob("nerft-*.whl")
    site = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    return site


def nerft(site: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "NERFT_CACHE": str(cwd / "cache"), "PYTHONNOUSERSITE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "nerft", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_wheel_carries_its_files_and_hides_the_checkout(installed, tmp_path):
    where = nerft(installed, tmp_path, "--help")
    assert where.returncode == 0, where.stderr
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import nerft, nerft.resources as r; print(nerft.__file__); print(r.presets_dir()); print(r.sample_dir())",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    module, presets, sample = probe.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(presets).is_relative_to(installed)
    assert sorted(path.name for path in Path(presets).iterdir()) == sorted(
        path.name for path in (ROOT / "conf").iterdir()
    )
    assert sorted(path.name for path in Path(sample).iterdir()) == ["dev.jsonl", "test.jsonl", "train.jsonl"]


def test_qwen7b_dry_run_from_another_folder(installed, tmp_path):
    result = nerft(installed, tmp_path, "train", "qwen7b", "--dry-run", "--deepspeed", "zero2")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["model_name_or_path"] == "Qwen/Qwen2.5-7B-Instruct"
    assert Path(rendered["deepspeed"]).is_relative_to(installed)  # the DeepSpeed config the wheel carries
    assert str(installed / "nerft" / "presets" / "qwen7b.yaml") in result.stdout.splitlines()[0]


def test_quick_start_from_another_folder(installed, tmp_path):
    result = nerft(installed, tmp_path, "train", "tiny-cpu", "--set", "train.max_steps=4", "-o", "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "run.json").is_file()
    assert "steps        4/4" in result.stdout
    # the data came from the wheel's sample: 32 train and 9 dev sentences
    assert "data         train 32, dev 9 records, prompt compact" in result.stderr
