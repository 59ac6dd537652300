"""Shared fixtures. Tests never download anything; `../shared` is optional and skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SAMPLE = ROOT / "data" / "sample"


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
    """A tiny random Qwen2 chat model with its own tokenizer (built once per test session)."""
    from nerft.models.tiny import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("models") / "tiny-qwen2")
