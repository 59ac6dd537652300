"""Where nerft's files are: those it ships inside its package (the presets, DeepSpeed configs and
the bundled sample) and its cache folder (`cache_dir`: models, LLaMA-Factory's argument names).

The shipped ones live in `src/nerft/presets/` and `src/nerft/sample/` (package data, so a wheel carries them);
the repository's top-level `conf/` and `data/sample` are symbolic links to those folders, so a
checkout shows them where users look and every file has one home.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

CACHE_VARIABLE = "NERFT_CACHE"
SAMPLE_PREFIX = "nerft:sample/"  # a config's data path into the bundled sample (conf/tiny-cpu.yaml)


def presets_dir() -> Path:
    """The folder of nerft's presets (`tiny-cpu.yaml`, ...) and DeepSpeed configs (`ds_z2_config.json`, ...)."""
    return Path(str(files("nerft") / "presets"))


def sample_dir() -> Path:
    """The bundled CLUENER-style sample: train.jsonl, dev.jsonl, test.jsonl."""
    return Path(str(files("nerft") / "sample"))


def bundled_path(value: str) -> Path | None:
    """`nerft:sample/train.jsonl` -> the bundled file's path; None for any other value."""
    text = str(value)
    return sample_dir() / text.removeprefix(SAMPLE_PREFIX) if text.startswith(SAMPLE_PREFIX) else None


def cache_dir() -> Path:
    """nerft's cache folder: $NERFT_CACHE, else ~/.cache/nerft."""
    configured = os.environ.get(CACHE_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nerft"
