"""Reading a config: presets, `--set key=value` overrides, validation with one line per problem.

    config = load_config("conf/tiny-cpu.yaml", overrides=["train.max_steps=5"])

`--set` values are strings that the config model coerces by each field's type (`override_value`);
typed CLI options arrive as `Override`s that carry their value as it is.

Every problem is reported at once, as `FILE:LINE: section.key: message`, and ends in a
`ConfigError`; nothing is launched. A key that is neither nerft's nor an argument of the installed
LLaMA-Factory is one of those problems (with the closest known name as a suggestion).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from nerft import io
from nerft.config.llamafactory_args import argument_names
from nerft.config.schema import (
    DEEPSPEED_PRESETS,
    LLAMAFACTORY_SECTIONS,
    MANAGED_KEYS,
    SECTIONS,
    NerftConfig,
)
from nerft.errors import ConfigError, validation_problem
from nerft.resources import bundled_path, presets_dir

PRESETS_DIR = presets_dir()  # conf/ in a checkout
PRESETS = ("qwen2.5-1.5b", "qwen3-8b", "qwen7b", "qwen7b-qlora", "tiny-cpu")
MAX_PROBLEMS_SHOWN = 50  # a config broken everywhere is not worth pages of stderr
YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}


@dataclass
class LoadedConfig:
    config: NerftConfig
    path: Path  # the file it came from
    overrides: list[str] = field(default_factory=list)


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file, or one of nerft's presets by name (`tiny-cpu` is conf/tiny-cpu.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{path.name}.yaml"
    # a bare name: "qwen2.5-1.5b" has no .yaml, though pathlib reads ".5-1" as its suffix
    if path.suffix.lower() not in (".yaml", ".yml") and len(path.parts) == 1 and preset.is_file():
        return preset
    raise ConfigError(f"{path}: no such config file", hint=f"give a YAML file, or a preset: {', '.join(PRESETS)}")


def load_config(name_or_path: str | os.PathLike, *, overrides: list[str] | tuple[str, ...] = ()) -> LoadedConfig:
    """Read, override and validate a config; raise `ConfigError` listing every problem."""
    path = resolve_config_path(name_or_path)
    data, lines = read_yaml(path)
    problems: list[tuple[int, str]] = []  # (line for sorting, message); --set problems come last
    AFTER_FILE = 10**9
    for override in overrides:
        try:
            keys = set_dotted(data, override)
        except ConfigError as exc:
            problems.append((AFTER_FILE, f"--set {override}: {exc.message}"))
        else:
            lines[keys] = "--set"

    def where(loc: tuple) -> tuple[int, str]:
        for end in range(len(loc), 0, -1):
            if loc[:end] in lines:
                line = lines[loc[:end]]
                return (AFTER_FILE, f"{path} (--set)") if line == "--set" else (line, f"{path}:{line}")
        return 0, str(path)

    def report(loc: tuple, message: str) -> None:
        order, place = where(loc)
        problems.append((order, f"{place}: {message}"))

    config = None
    try:
        config = NerftConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            report(loc, describe(loc, error))
    for loc, message in passthrough_problems(data):
        report(loc, f"{'.'.join(loc)}: {message}")
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        ordered = [message for _, message in sorted(problems, key=lambda item: item[0])]
        if len(ordered) > MAX_PROBLEMS_SHOWN:
            ordered = [*ordered[:MAX_PROBLEMS_SHOWN], f"... and {len(ordered) - MAX_PROBLEMS_SHOWN} more problems"]
        raise ConfigError("\n".join([*ordered, f"{path}: {count} in this config; nothing was run"]))
    return LoadedConfig(config=config, path=path, overrides=list(overrides))


def describe(loc: tuple[str, ...], error: dict) -> str:
    """One pydantic error as `section.key: message`; an unknown section or key names the known ones."""
    if error["type"] != "extra_forbidden":
        return validation_problem(error, loc=loc)
    if len(loc) == 1:
        message = f"unknown section (sections: {', '.join(SECTIONS)})"
    else:
        message = "unknown key" + _suggestion(loc[-1], _declared_keys(loc[0]))
    return f"{'.'.join(loc)}: {message}"


def passthrough_problems(data: dict) -> list[tuple[tuple[str, str], str]]:
    """Keys in LLaMA-Factory sections that nerft does not declare: each must be a LLaMA-Factory argument.

    Read from the raw mapping, so these are reported together with the schema's own problems.
    """
    declared_in = {key: name for name in LLAMAFACTORY_SECTIONS for key in _declared_keys(name)}
    extras = {
        name: [key for key in data[name] if key not in _declared_keys(name)]
        for name in LLAMAFACTORY_SECTIONS
        if isinstance(data.get(name), dict)
    }
    if not any(extras.values()):
        return []
    problems = []
    seen: dict[str, str] = {}

    known = argument_names()
    for section, keys in extras.items():
        for key in keys:
            key = str(key)
            loc = (section, key)
            if key in MANAGED_KEYS:
                problems.append((loc, f"set by nerft: {MANAGED_KEYS[key]}"))
            elif key in declared_in:
                problems.append((loc, f"belongs in {declared_in[key]}.{key}"))
            elif key in seen:
                problems.append((loc, f"also given as {seen[key]}.{key}"))
            elif key not in known:
                problems.append(
                    (loc, "unknown key (neither nerft's nor a LLaMA-Factory argument)" + _suggestion(key, known))
                )
            seen.setdefault(key, section)
    return problems


def _declared_keys(section: str) -> list[str]:
    model = NerftConfig.model_fields.get(section)
    annotation = model.annotation if model is not None else None
    return list(getattr(annotation, "model_fields", {}))


def _suggestion(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    """A config file's mapping of sections and the line of every key path in it."""
    return io.read_yaml(path, error=ConfigError, mapping=f"a mapping of sections ({', '.join(SECTIONS)})")


class Override(str):
    """A `section.key=value` override whose value is already typed (a typed CLI option such as
    `--nproc-per-node 2`): it is set as it is, never parsed again. As text it reads as the
    `--set` it stands for, so it can be logged and recorded like one."""

    key: str
    value: Any

    def __new__(cls, key: str, value: Any) -> Override:
        override = super().__new__(cls, f"{key}={value}")
        override.key, override.value = key, value
        return override


NULL_WORDS = {"null", "none", "~", ""}


def override_value(keys: tuple[str, ...], text: str) -> Any:
    """The value of `--set section.key=TEXT`, for the config model to coerce by the field's type.

    A key nerft declares gets the string itself (pydantic reads "2024" as a string for `data.name`,
    as an int for `train.max_steps`, "no" as false for a bool), except: a null word for a field that
    may be unset is None; a list or mapping field reads TEXT as YAML (`[name, address]`); a literal
    number (`model.quantization_bit=4`) is that number. A LLaMA-Factory argument nerft does not
    declare has no type here: its TEXT is read as YAML would (`parse_value`).
    """
    annotation = _declared_annotation(keys)
    if annotation is None:
        return parse_value(text)
    kinds = _flatten(annotation)
    if text.strip().lower() in NULL_WORDS and type(None) in kinds:
        return None
    for kind in kinds:
        for choice in typing.get_args(kind) if typing.get_origin(kind) is Literal else ():
            if not isinstance(choice, str) and str(choice) == text.strip():
                return choice
    if any(typing.get_origin(kind) in (list, dict, tuple, set) or kind in (list, dict) for kind in kinds):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def _declared_annotation(keys: tuple[str, ...]) -> Any:
    if len(keys) != 2:
        return None
    section = NerftConfig.model_fields.get(keys[0])
    fields = getattr(section.annotation, "model_fields", {}) if section is not None else {}
    return fields[keys[1]].annotation if keys[1] in fields else None


def _flatten(annotation: Any) -> list[Any]:
    """The members of a union (`int | Literal["auto"] | None`), or the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [kind for member in typing.get_args(annotation) for kind in _flatten(member)]
    return [annotation]


def parse_value(text: str) -> Any:
    """A `--set` value as YAML would read it, but with numbers like `2e-4` (which YAML 1.1 keeps as
    text) as floats, and YAML 1.1's yes/no/on/off as the words they are (only true/false are booleans)."""
    if text.strip().lower() in YAML11_WORDS:
        return text.strip()  # `eval_strategy=no` means the string "no", not YAML 1.1's false
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") and value.strip() not in ("", ".") else int(value)
        except ValueError:
            return value
    return value


def set_dotted(data: dict, assignment: str) -> tuple[str, ...]:
    """Apply `section.key=value` to the raw config mapping; return the key path it set."""
    if isinstance(assignment, Override):
        dotted, text = assignment.key, None
    elif "=" not in assignment:
        raise ConfigError("expected section.key=value")
    else:
        dotted, text = assignment.split("=", 1)
    keys = [part.strip() for part in dotted.strip().split(".")]
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"expected section.key=value (sections: {', '.join(SECTIONS)})")
    if keys[0] not in SECTIONS:
        raise ConfigError(f"unknown section {keys[0]!r} (sections: {', '.join(SECTIONS)})")
    target = data
    for key in keys[:-1]:
        child = target.get(key)
        if child is None:
            child = target[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key} is not a section")
        target = child
    target[keys[-1]] = assignment.value if isinstance(assignment, Override) else override_value(tuple(keys), text)
    return tuple(keys)


def resolve_paths(config: NerftConfig, base: Path | None = None) -> NerftConfig:
    """A copy of the config with its relative paths made absolute against `base` (the current folder)."""
    base = Path(base or Path.cwd())

    def absolute(value):
        if value is None:
            return None
        return bundled_path(value) or (base / Path(value).expanduser()).resolve()

    resolved = config.model_copy(deep=True)
    for key in ("train", "dev", "dataset_dir"):
        setattr(resolved.data, key, absolute(getattr(resolved.data, key)))
    resolved.dataset.dataset_dir = absolute(resolved.dataset.dataset_dir)
    resolved.output.output_dir = absolute(resolved.output.output_dir)
    name = resolved.model.model_name_or_path
    if not name.startswith("nerft:") and (name.startswith((".", "/", "~")) or (base / name).is_dir()):
        resolved.model.model_name_or_path = str(absolute(name))
    if resolved.method.deepspeed and resolved.method.deepspeed not in DEEPSPEED_PRESETS:
        resolved.method.deepspeed = str(absolute(resolved.method.deepspeed))
    return resolved


def config_to_dict(config: NerftConfig) -> dict:
    """The config as plain YAML-ready data, sections in their usual order, unset optional keys left out."""
    data = config.model_dump(mode="json", exclude_none=True)
    return {section: data[section] for section in SECTIONS if data.get(section)}
