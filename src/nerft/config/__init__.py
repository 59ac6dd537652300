"""nerft's training config: schema (`schema`), reading and presets (`load`), rendering the
LLaMA-Factory YAML (`render`) and checking it against the installed LLaMA-Factory (`llamafactory_args`)."""

from nerft.config.load import LoadedConfig, load_config, resolve_config_path
from nerft.config.schema import NerftConfig

__all__ = ["LoadedConfig", "NerftConfig", "load_config", "resolve_config_path"]
