"""The installed LLaMA-Factory's own view of a set of training arguments.

Two checks, both against the LLaMA-Factory that `llamafactory-cli` will run:

- `argument_names()`: every key its training parser accepts (the fields of ModelArguments,
  DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments). Importing
  LLaMA-Factory takes ~13 s, so the names are cached per (llamafactory, transformers) version under
  nerft's cache folder; config validation then answers in well under a second.
- `check_train_args(args)`: LLaMA-Factory's parser on the rendered dict, without loading a model:
  `HfArgumentParser(_TRAIN_ARGS).parse_dict` (unknown keys, choices and every dataclass
  `__post_init__`, i.e. transformers' TrainingArguments checks) and `_verify_model_args`
  (quantization/method combinations). `ddp_backend` is checked against its choices only: it
  needs the process group a torchrun launch creates. Where DeepSpeed is not installed, nerft reads its JSON file
  itself (TrainingArguments would import DeepSpeed to read it). `get_train_args`' remaining checks
  are about the machine (distributed launch, installed packages, devices) and are left to the
  launch itself. parse_dict does not check plain types (an int field given a string passes), so
  the typed keys are nerft's schema's job.

transformers refuses `bf16: true` while building TrainingArguments on a machine without a bf16 GPU.
The check asks whether the arguments are valid for the GPU a config is written for, so it answers
that question with "yes"; whether *this* machine can run bf16 is nerft's own check at launch
(`nerft.training.kernels.check_precision`).
"""

from __future__ import annotations

import contextlib
from importlib import metadata
from typing import Any

from nerft.errors import ConfigError, EnvironmentProblem, NerftError
from nerft.io import read_json, write_json_atomic
from nerft.resources import cache_dir

LLAMAFACTORY_CLI = "llamafactory-cli"
INSTALL_HINT = "pip install llamafactory==0.9.5 (nerft's dependency; is nerft's virtual environment active?)"


def installed_versions() -> dict[str, str]:
    versions = {}
    for package in ("llamafactory", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def argument_names() -> frozenset[str]:
    """Every argument LLaMA-Factory's `train` accepts (cached per installed version)."""
    versions = installed_versions()
    if versions["llamafactory"] == "absent":
        raise EnvironmentProblem("LLaMA-Factory is not installed", hint=INSTALL_HINT)
    path = cache_dir() / f"llamafactory-{versions['llamafactory']}-transformers-{versions['transformers']}-args.json"
    if path.is_file():
        with contextlib.suppress(NerftError):  # a broken cache is made again
            return frozenset(read_json(path, expect=list))
    names = _argument_names_from_source()
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        write_json_atomic(path, sorted(names), indent=None)
    return names


def _argument_names_from_source() -> frozenset[str]:
    import dataclasses

    from llamafactory.hparams.parser import _TRAIN_ARGS

    return frozenset(field.name for cls in _TRAIN_ARGS for field in dataclasses.fields(cls) if field.init)


@contextlib.contextmanager
def _assume_bf16_gpu():
    from unittest import mock

    import transformers.training_args

    with mock.patch.object(transformers.training_args, "is_torch_bf16_gpu_available", return_value=True):
        yield


def check_train_args(args: dict[str, Any], *, source: str = "llamafactory_train.yaml") -> None:
    """Raise `ConfigError` with LLaMA-Factory's own message when its parser rejects `args`."""
    import importlib.util

    from llamafactory.hparams.parser import _parse_train_args, _verify_model_args

    args = dict(args)
    backend = args.pop("ddp_backend", None)
    if backend is not None:
        # Under torchrun the process group exists before TrainingArguments is built; parsed here,
        # in one plain process, an explicit backend makes accelerate ask for a group that does not
        # exist ("Default process group has not been initialized"). So nerft checks the value
        # against transformers' own choices and parses the rest without it.
        _check_ddp_backend(backend, source)
    if args.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        # TrainingArguments loads DeepSpeed to read its config; where it is not installed (a CPU
        # machine preparing a GPU run) nerft reads the file itself and leaves the rest to the launch.
        _check_deepspeed_file(args.pop("deepspeed"), source)
    try:
        with _assume_bf16_gpu():
            model_args, data_args, _training_args, finetuning_args, _generating_args = _parse_train_args(args)
        _verify_model_args(model_args, data_args, finetuning_args)
    except (ValueError, TypeError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(
            f"{source}: LLaMA-Factory {installed_versions()['llamafactory']} rejects the rendered arguments: {message}"
        ) from None


def _check_ddp_backend(backend: Any, source: str) -> None:
    import dataclasses

    from transformers import TrainingArguments

    choices = next(
        field.metadata.get("choices") for field in dataclasses.fields(TrainingArguments) if field.name == "ddp_backend"
    )
    if choices and backend not in choices:
        raise ConfigError(f"{source}: ddp_backend: {backend!r} is not one of {', '.join(choices)}")


def _check_deepspeed_file(path: str, source: str) -> None:
    config = read_json(path, error=ConfigError, what=f"DeepSpeed config of {source}")
    if not isinstance(config.get("zero_optimization"), dict):
        raise ConfigError(f"{path}: a DeepSpeed config needs a zero_optimization section")
