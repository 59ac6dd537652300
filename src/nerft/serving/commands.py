"""The command lines that serve a run over an OpenAI-compatible API.

Two servers, both given the weights `resolve_model` picks (the merged model, or base + adapter):

- `llamafactory-cli api <run>/llamafactory_api.yaml`: LLaMA-Factory's own server, with the run's
  template, so the prompt is rendered exactly as at training; any of its backends (huggingface,
  which runs on CPU, vllm, sglang). It reads host, port, key and model name from the environment.
- vLLM's OpenAI server: the adapter as a LoRA module (`--lora-modules NAME=PATH`) with
  `--max-lora-rank` taken from the adapter, the chat template LLaMA-Factory saved at training, and
  vLLM's neutral sampling defaults instead of the model's generation_config.json (Qwen's asks for a
  repetition penalty, which nerft's other engines do not apply).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from nerft.config.llamafactory_args import INSTALL_HINT, LLAMAFACTORY_CLI
from nerft.errors import ConfigError
from nerft.inference.source import ModelSource, resolve_model, vllm_max_lora_rank
from nerft.runfolder import RunInfo

LLAMAFACTORY_API = "llamafactory_api.yaml"
LLAMAFACTORY_BACKENDS = ("huggingface", "vllm", "sglang")
SERVER_ENGINES = ("llamafactory", "vllm")
VLLM_INSTALL = "pip install vllm (on a CUDA machine), or serve with --engine llamafactory"


@dataclass
class ServerCommand:
    """A server to start: its argv, the environment it adds, and the model name clients use."""

    argv: list[str]
    env: dict[str, str]
    model_name: str
    install_hint: str
    config_file: Path | None = None
    config: dict = field(default_factory=dict)


def llamafactory_api_config(source: ModelSource, *, backend: str = "huggingface") -> dict:
    """The arguments `llamafactory-cli api` reads from its YAML file."""
    if backend not in LLAMAFACTORY_BACKENDS:
        raise ConfigError(f"unknown LLaMA-Factory backend {backend!r} (choose from: {', '.join(LLAMAFACTORY_BACKENDS)})")
    config: dict = {"model_name_or_path": source.model}
    if source.adapter is not None:
        config.update(adapter_name_or_path=str(source.adapter), finetuning_type="lora")
    config.update(template=source.template, infer_backend=backend)
    if backend == "vllm" and source.adapter is not None:
        config["vllm_max_lora_rank"] = vllm_max_lora_rank(source.lora_rank)
    return config


def llamafactory_api_command(
    run: RunInfo,
    *,
    host: str,
    port: int,
    model_name: str,
    api_key: str | None = None,
    backend: str = "huggingface",
    log_requests: bool = False,
) -> ServerCommand:
    config = llamafactory_api_config(resolve_model(run), backend=backend)
    config_file = Path(run.run_dir) / LLAMAFACTORY_API
    env = {"API_HOST": host, "API_PORT": str(port), "API_MODEL_NAME": model_name, "API_VERBOSE": "1" if log_requests else "0"}
    if api_key:
        env["API_KEY"] = api_key
    return ServerCommand([LLAMAFACTORY_CLI, "api", str(config_file)], env, model_name, INSTALL_HINT, config_file, config)


def vllm_server_command(
    run: RunInfo,
    *,
    host: str,
    port: int,
    model_name: str,
    api_key: str | None = None,
    max_model_len: int | None = None,
) -> ServerCommand:
    """`python -m vllm.entrypoints.openai.api_server ...` for the run (vLLM is a Python package)."""
    source = resolve_model(run)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", source.model, "--host", host, "--port", str(port)]
    if source.adapter is not None:
        argv += [
            "--enable-lora",
            "--lora-modules", f"{model_name}={source.adapter}",
            "--max-lora-rank", str(vllm_max_lora_rank(source.lora_rank)),
            "--max-loras", "1",
        ]
    else:
        argv += ["--served-model-name", model_name]
    chat_template = _training_chat_template(run, source)
    if chat_template is not None:
        argv += ["--chat-template", str(chat_template)]
    argv += ["--generation-config", "vllm"]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    env = {"VLLM_API_KEY": api_key} if api_key else {}  # in the environment, not in a logged argv
    return ServerCommand(argv, env, model_name, VLLM_INSTALL)


def _training_chat_template(run: RunInfo, source: ModelSource) -> Path | None:
    """The Jinja chat template LLaMA-Factory saved with the tokenizer at training, if it did."""
    for folder in (source.adapter, run.merged_model, run.run_dir):
        if folder is not None and (Path(folder) / "chat_template.jinja").is_file():
            return Path(folder) / "chat_template.jinja"
    return None
