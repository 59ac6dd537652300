"""The command lines that serve a run over an OpenAI-compatible API.

Two servers, both given the weights `resolve_model` picks (the merged model, or base + adapter):

- `llamafactory-cli api <run>/llamafactory_api.yaml`: LLaMA-Factory's own server, with the run's
  template, so the prompt is rendered exactly as at training; any of its backends (huggingface,
  which runs on CPU, vllm, sglang). It reads host, port, key and model name from the environment.
- vLLM's OpenAI server, run by the interpreter that has vLLM (`nerft.inference.vllm_env`: this
  one on a CUDA machine, `.venv-vllm/` on a CPU): the adapter as a LoRA module
  (`--lora-modules NAME=PATH`) with `--max-lora-rank` taken from the adapter, the chat template
  LLaMA-Factory saved at training, vLLM's neutral sampling defaults instead of the model's
  generation_config.json (Qwen's asks for a repetition penalty, which nerft's other engines do
  not apply), and the offline engine's derived settings (`vllm_settings`: max_model_len from
  the run, float32, eager mode and a sized KV cache on a CPU). It gets a TMPDIR of its own: vLLM
  leaves `vllm_dist_*` files behind in it.

vLLM's server also serves several runs at once: one base model in memory, each run's adapter a
LoRA module under the run's name (`--lora-modules a=PATH b=PATH`, `--max-loras` all of them,
`--max-lora-rank` the largest), applied per request; `/v1/models` lists each with the base as its
parent. The runs must share everything the server holds once (`check_servable_together`): the
base, the chat template, and, so that the prompts clients render from a run are the ones all the
runs were trained on, the prompt format and the labels. The server always takes vLLM's LoRA path,
also on a CPU, where nerft's offline vLLM engine merges an adapter into a cached copy of the base
because that answers 4.8x faster (docs/PERFORMANCE.md, section 8): merged copies would be one base
per run in memory, which is what several runs behind one server avoid. LLaMA-Factory's server
loads one adapter (its issue 5172), so it serves one run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nerft.config.llamafactory_args import INSTALL_HINT, LLAMAFACTORY_CLI
from nerft.errors import ConfigError
from nerft.inference.engines.vllm import vllm_settings
from nerft.inference.source import ModelSource, adapter_source, resolve_model, vllm_max_lora_rank
from nerft.inference.vllm_env import SETUP_HINT, VllmEnvironment, find_vllm_environment
from nerft.models.download import find_model
from nerft.runfolder import RunInfo

LLAMAFACTORY_API = "llamafactory_api.yaml"
LLAMAFACTORY_BACKENDS = ("huggingface", "vllm", "sglang")
SERVER_ENGINES = ("llamafactory", "vllm")
VLLM_INSTALL = f"{SETUP_HINT}; or serve with --engine llamafactory"
# `LLM(...)` keywords of `vllm_settings` that the server takes as flags (the others are set above).
VLLM_SERVER_FLAGS = {
    "max_model_len": "--max-model-len",
    "dtype": "--dtype",
    "kv_cache_memory_bytes": "--kv-cache-memory-bytes",
}


@dataclass
class ServerCommand:
    """A server to start: its argv, the environment it adds, and the model names clients use."""

    argv: list[str]
    env: dict[str, str]
    model_names: tuple[str, ...]
    install_hint: str
    config_file: Path | None = None
    config: dict = field(default_factory=dict)
    missing: str | None = None  # why the server cannot start here (its program is not installed)
    private_tmpdir: bool = False  # give it a TMPDIR of its own, removed when it stops


def llamafactory_api_config(source: ModelSource, *, backend: str = "huggingface") -> dict:
    """The arguments `llamafactory-cli api` reads from its YAML file."""
    if backend not in LLAMAFACTORY_BACKENDS:
        raise ConfigError(
            f"unknown LLaMA-Factory backend {backend!r} (choose from: {', '.join(LLAMAFACTORY_BACKENDS)})"
        )
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
    env = {
        "API_HOST": host,
        "API_PORT": str(port),
        "API_MODEL_NAME": model_name,
        "API_VERBOSE": "1" if log_requests else "0",
    }
    if api_key:
        env["API_KEY"] = api_key
    return ServerCommand(
        [LLAMAFACTORY_CLI, "api", str(config_file)], env, (model_name,), INSTALL_HINT, config_file, config
    )


def vllm_server_command(
    served: Mapping[str, RunInfo],
    *,
    host: str,
    port: int,
    api_key: str | None = None,
    environment: VllmEnvironment | None = None,
) -> ServerCommand:
    """`<python> -m vllm.entrypoints.openai.api_server ...` serving each run of `served` under its
    name (model name -> run), `python` being the one with vLLM (`environment`, found when not
    given). One run is served as `resolve_model` picks its weights; several as LoRA adapters of
    their one base (see the module docstring)."""

    names = list(served)
    runs = list(served.values())
    if len(runs) == 1:
        sources = [resolve_model(runs[0])]
    else:
        check_servable_together(runs)
        sources = [adapter_source(run) for run in runs]
    source = sources[0]
    environment = environment or find_vllm_environment()
    missing = (
        None
        if environment is not None
        else "no vLLM found: not in this Python, and no .venv-vllm/ beside it or in the repository"
    )
    python = environment.python if environment is not None else sys.executable
    cutoffs = [run.cutoff_len for run in runs]
    settings = vllm_settings(
        source,
        runs[0].prompt_format(),
        cutoff_len=None if None in cutoffs else max(cutoffs),
        cpu=environment is not None and environment.cpu,
    )
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        source.model,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if source.adapter is not None:
        argv += [
            "--enable-lora",
            "--lora-modules",
            *(f"{name}={adapter.adapter}" for name, adapter in zip(names, sources)),
            "--max-lora-rank",
            str(max(vllm_max_lora_rank(adapter.lora_rank) for adapter in sources)),
            "--max-loras",
            str(len(sources)),  # every adapter in one batch: requests for different runs are not queued apart
        ]
    else:
        argv += ["--served-model-name", names[0]]
    chat_template = _training_chat_template(runs[0], source.adapter)
    if chat_template is not None:
        argv += ["--chat-template", str(chat_template)]
    argv += ["--generation-config", "vllm"]
    for key, flag in VLLM_SERVER_FLAGS.items():
        if key in settings.llm:
            argv += [flag, str(settings.llm[key])]
    if settings.llm.get("enforce_eager"):
        argv.append("--enforce-eager")
    env = dict(settings.env)
    if api_key:
        env["VLLM_API_KEY"] = api_key  # in the environment, not in a logged argv
    return ServerCommand(argv, env, tuple(names), VLLM_INSTALL, missing=missing, private_tmpdir=True)


def check_servable_together(runs: list[RunInfo]) -> None:
    """A `ConfigError` naming two runs and how they differ, unless every run has the first one's
    base model, chat template, prompt format and labels (what one server of LoRA adapters shares)."""
    first = runs[0]
    for run in runs[1:]:
        difference = _difference(first, run)
        if difference is not None:
            raise ConfigError(f"runs {first.run_dir} and {run.run_dir} cannot share one server: {difference}")


def _difference(one: RunInfo, other: RunInfo) -> str | None:
    for what, mine, theirs in (
        ("base models", _base_model(one), _base_model(other)),
        ("chat templates", one.template, other.template),
        ("prompt formats", one.prompt, other.prompt),
        ("labels", ",".join(one.labels), ",".join(other.labels)),
    ):
        if mine != theirs:
            return f"their {what} differ ({mine} vs {theirs})"
    saved = [_training_chat_template(run, run.adapter_dir) for run in (one, other)]
    if None not in saved and saved[0].read_text(encoding="utf-8") != saved[1].read_text(encoding="utf-8"):
        return "the chat templates saved with them (chat_template.jinja) differ"
    return None


def _base_model(run: RunInfo) -> str:
    """The run's base model as the folder it is on disk, where it is (two names of one model match)."""
    folder = find_model(run.base_model, build=False)
    return str(folder) if folder is not None else run.base_model


def _training_chat_template(run: RunInfo, adapter: str | Path | None) -> Path | None:
    """The Jinja chat template LLaMA-Factory saved with the tokenizer at training (beside the
    `adapter` served, the merged model, or in the run folder), if it did."""
    for folder in (adapter, run.merged_model, run.run_dir):
        if folder is not None and (Path(folder) / "chat_template.jinja").is_file():
            return Path(folder) / "chat_template.jinja"
    return None
