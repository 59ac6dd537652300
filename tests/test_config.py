"""nerft's training config: presets, validation messages (one `FILE:LINE: section.key: message` line
per problem), `--set` overrides, and keys passed through to LLaMA-Factory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.config.load import (
    PRESETS,
    load_config,
    parse_value,
    resolve_paths,
    set_dotted,
)
from nerft.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("session_cache")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """\
data:
  train: data/sample/train.jsonl
model:
  model_name_or_path: nerft:tiny-qwen2
"""


def problems(path, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides=list(overrides))
    return str(info.value).splitlines()


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_by_name(name):
    loaded = load_config(name)
    assert loaded.path == (ROOT / "conf" / f"{name}.yaml").resolve()  # conf/ links to the package's presets
    assert loaded.config.dataset.template == ("qwen3_nothink" if name == "qwen3-8b" else "qwen")
    # the GPU presets adapt a pretrained model; the tiny random one is fine-tuned whole to learn anything
    assert loaded.config.method.finetuning_type == ("full" if name == "tiny-cpu" else "lora")


def test_presets_use_the_tutorials_model_and_method():
    qwen = load_config("qwen7b").config
    assert qwen.model.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert (qwen.method.lora_rank, qwen.method.lora_target, qwen.train.learning_rate) == (8, "all", 1.0e-4)
    assert (qwen.train.per_device_train_batch_size, qwen.train.gradient_accumulation_steps, qwen.train.bf16) == (
        4,
        8,
        True,
    )
    assert qwen.dataset.cutoff_len == "auto" and qwen.dataset.neat_packing is True
    qlora = load_config("qwen7b-qlora").config
    assert qlora.model.quantization_bit == 4
    assert qlora.model.passthrough() == {
        "quantization_method": "bnb",
        "double_quantization": True,
        "upcast_layernorm": True,
    }
    tiny = load_config("tiny-cpu").config
    assert (tiny.train.bf16, tiny.train.fp16, tiny.model.model_name_or_path) == (False, False, "nerft:tiny-qwen2")


def test_unknown_key_wrong_type_and_missing_model_are_all_reported_with_lines(tmp_path):
    path = write(
        tmp_path,
        """\
data:
  train: data/sample/train.jsonl
  trian_extra: 1
train:
  learning_rate: fast
  per_device_train_batch_size: 0
""",
    )
    lines = problems(path)
    assert lines == [
        f"{path}: model: missing (required)",
        f"{path}:3: data.trian_extra: unknown key",
        f"{path}:5: train.learning_rate: Input should be a valid number, unable to parse string as a number (got 'fast')",
        f"{path}:6: train.per_device_train_batch_size: Input should be greater than or equal to 1 (got 0)",
        f"{path}: 4 problems in this config; nothing was run",
    ]


def test_unknown_section_is_named(tmp_path):
    path = write(tmp_path, MINIMAL + "trainer:\n  max_steps: 3\n")
    assert problems(path)[0] == (
        f"{path}:5: trainer: unknown section (sections: data, model, method, dataset, output, train, eval, launch)"
    )


def test_a_key_llamafactory_does_not_know_is_an_error_with_a_suggestion(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  gradient_acumulation_steps: 4\n  ddp_timeout: 600\n")
    assert problems(path)[0] == (
        f"{path}:6: train.gradient_acumulation_steps: unknown key (neither nerft's nor a LLaMA-Factory argument); "
        "did you mean 'gradient_accumulation_steps'?"
    )


def test_llamafactory_keys_pass_through(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  ddp_timeout: 600\nmethod:\n  lora_alpha: 32\n")
    config = load_config(path).config
    assert config.train.passthrough() == {"ddp_timeout": 600}
    assert config.method.passthrough() == {"lora_alpha": 32}


def test_keys_nerft_sets_itself_say_how_to_set_them(tmp_path):
    path = write(
        tmp_path,
        MINIMAL + "output:\n  overwrite_output_dir: true\ntrain:\n  resume_from_checkpoint: null\n  template: qwen\n",
    )
    assert problems(path)[:3] == [
        f"{path}:6: output.overwrite_output_dir: set by nerft: use `nerft train --force`",
        f"{path}:8: train.resume_from_checkpoint: set by nerft: use `nerft train --resume`",
        f"{path}:9: train.template: belongs in dataset.template",
    ]


def test_missing_dataset_is_reported(tmp_path):
    path = write(tmp_path, "model:\n  model_name_or_path: nerft:tiny-qwen2\n")
    assert problems(path)[0] == (
        f"{path}: no training data: set data.train (raw CLUE NER file) or dataset.dataset (a registered dataset)"
    )
    path = write(tmp_path, "model:\n  model_name_or_path: x\ndataset:\n  dataset: cluener_train\n")
    assert problems(path)[0] == f"{path}: dataset.dataset needs dataset.dataset_dir (the folder with dataset_info.json)"


def test_cross_field_checks(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  bf16: true\n  fp16: true\n")
    assert problems(path)[0] == f"{path}:5: train: bf16 and fp16 are both true: choose one"
    assert problems("tiny-cpu", ["method.finetuning_type=full", "model.quantization_bit=4"])[0].endswith(
        "model.quantization_bit (QLoRA) needs method.finetuning_type: lora"
    )
    assert "multi-node training needs master_addr and master_port" in problems("tiny-cpu", ["launch.nnodes=2"])[0]


def test_set_overrides_values_with_yaml_types():
    config = load_config(
        "tiny-cpu",
        overrides=["train.learning_rate=2e-4", "train.bf16=false", "output.save_steps=7", "train.ddp_timeout=60"],
    ).config
    assert config.train.learning_rate == 2e-4
    assert config.output.save_steps == 7
    assert config.train.passthrough() == {"ddp_timeout": 60}


def test_set_mistakes_are_reported():
    lines = problems("tiny-cpu", ["trainn.max_steps=3", "max_steps=3", "train.max_steps=-1"])
    assert lines[0].startswith("--set trainn.max_steps=3: unknown section 'trainn'")
    assert lines[1].startswith("--set max_steps=3: expected section.key=value")
    assert (
        lines[2]
        == f"{(ROOT / 'conf' / 'tiny-cpu.yaml').resolve()} (--set): train.max_steps: Input should be greater than or equal to 1 (got '-1')"
    )
    # spaces around the dots: still the --set, not the file's line
    spaced = problems("tiny-cpu", ["train. max_steps=-1"])[:1]
    assert spaced == [
        f"{(ROOT / 'conf' / 'tiny-cpu.yaml').resolve()} (--set): train.max_steps: Input should be greater than or equal to 1 (got '-1')"
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2e-4", 2e-4),
        ("1.0e-4", 1e-4),
        ("3", 3),
        ("true", True),
        ("False", False),
        ("no", "no"),
        ("off", "off"),
        ("null", None),
        ("qwen", "qwen"),
        ("a,b", "a,b"),
        ("", None),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_eval_strategy_no_is_the_word_in_yaml_and_in_set(tmp_path):
    assert load_config(write(tmp_path, MINIMAL + "eval:\n  eval_strategy: no\n")).config.eval.eval_strategy == "no"
    assert load_config("tiny-cpu", overrides=["eval.eval_strategy=no"]).config.eval.eval_strategy == "no"


def test_set_dotted_creates_missing_sections():
    data: dict = {}
    set_dotted(data, "launch.nnodes=2")
    assert data == {"launch": {"nnodes": "2"}}  # a string: the config model coerces it by the field's type


def test_paths_are_resolved_against_the_current_folder(tmp_path):
    config = load_config("tiny-cpu").config
    resolved = resolve_paths(config, tmp_path)
    # nerft:sample/ is the bundled sample wherever the command runs; other relative paths are the folder's
    assert resolved.data.train == (ROOT / "data" / "sample" / "train.jsonl").resolve()
    assert (
        resolve_paths(load_config("qwen7b").config, tmp_path).data.train == tmp_path / "data" / "cluener" / "train.json"
    )
    assert resolved.model.model_name_or_path == "nerft:tiny-qwen2"
    assert config.data.train == Path("nerft:sample/train.jsonl")  # the original is untouched


def test_broken_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "model:\n  model_name_or_path: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:3: broken YAML")


def test_cli_prints_one_line_per_problem_and_exits_1(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  learning_rate: fast\n  bogus_key: 1\n")
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:6: train.learning_rate: Input should be a valid number, unable to parse string as a number (got 'fast')",
        f"{path}:7: train.bogus_key: unknown key (neither nerft's nor a LLaMA-Factory argument)",
        f"nerft: error: {path}: 2 problems in this config; nothing was run",
    ]
    assert "Traceback" not in result.output


def test_cli_names_presets_for_a_missing_config():
    result = CliRunner().invoke(app, ["train", "no-such-preset", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "nerft: error: no-such-preset: no such config file (give a YAML file, or a preset: qwen2.5-1.5b, qwen3-8b, qwen7b, qwen7b-qlora, tiny-cpu)"
    )


def test_preset_yaml_files_are_plain_yaml():
    for name in PRESETS:
        data = yaml.safe_load((ROOT / "conf" / f"{name}.yaml").read_text(encoding="utf-8"))
        assert set(data) <= {"data", "model", "method", "dataset", "output", "train", "eval", "launch"}
