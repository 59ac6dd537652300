"""`--set section.key=value` is coerced by the field's type, and typed CLI options reach the config
as values: `--set data.name=2024` was refused ("Input should be a valid string (got 2024)")."""

import pytest
import yaml
from conftest import FakeLauncher
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.config.load import Override, load_config
from nerft.errors import ConfigError
from nerft.training import kernels


def config_with(*overrides):
    return load_config("tiny-cpu", overrides=list(overrides)).config


@pytest.mark.parametrize(
    ("override", "read", "value"),
    [
        ("data.name=2024", lambda c: c.data.name, "2024"),  # str field: the digits stay text
        ("data.prompt=seed", lambda c: c.data.prompt, "seed"),
        ("train.max_steps=5", lambda c: c.train.max_steps, 5),
        ("train.learning_rate=2e-4", lambda c: c.train.learning_rate, 2e-4),
        ("train.num_train_epochs=2", lambda c: c.train.num_train_epochs, 2.0),
        ("train.bf16=false", lambda c: c.train.bf16, False),
        ("train.bf16=no", lambda c: c.train.bf16, False),  # a bool field: YAML 1.1's no is false here
        ("eval.eval_strategy=no", lambda c: c.eval.eval_strategy, "no"),  # a choice: the word
        ("model.quantization_bit=4", lambda c: c.model.quantization_bit, 4),  # Literal[4, 8]
        ("model.quantization_bit=null", lambda c: c.model.quantization_bit, None),
        ("dataset.cutoff_len=1024", lambda c: c.dataset.cutoff_len, 1024),
        ("dataset.cutoff_len=auto", lambda c: c.dataset.cutoff_len, "auto"),
        ("model.enable_liger_kernel=true", lambda c: c.model.enable_liger_kernel, True),
        ("data.labels=[name, address]", lambda c: c.data.labels, ["name", "address"]),
        ("data.dev=null", lambda c: c.data.dev, None),
        ("launch.master_addr=10.0.0.1", lambda c: c.launch.master_addr, "10.0.0.1"),
        ("launch.master_addr=1e5", lambda c: c.launch.master_addr, "1e5"),  # a host name, not a float
        ("method.lora_target=q_proj,v_proj", lambda c: c.method.lora_target, "q_proj,v_proj"),
        ("train.lr_scheduler_type=2024", lambda c: c.train.lr_scheduler_type, "2024"),
    ],
)
def test_set_is_coerced_by_the_fields_type(override, read, value):
    # on LoRA (tiny-cpu fine-tunes fully), so that QLoRA's quantization_bit is allowed
    assert read(config_with("method.finetuning_type=lora", override)) == value
    assert type(read(config_with("method.finetuning_type=lora", override))) is type(value)


def test_a_value_the_type_refuses_is_one_problem_line():
    with pytest.raises(
        ConfigError,
        match=r"\(--set\): train.max_steps: Input should be a valid integer, unable to parse string as an integer \(got 'many'\)",
    ):
        config_with("train.max_steps=many")
    with pytest.raises(ConfigError, match=r"model.quantization_bit: Input should be 4 or 8 \(got '3'\)"):
        config_with("model.quantization_bit=3")


def test_a_llamafactory_argument_nerft_does_not_declare_is_read_as_yaml():
    assert config_with("train.max_grad_norm=0.5").train.passthrough()["max_grad_norm"] == 0.5
    assert config_with("train.ddp_timeout=180000").train.passthrough()["ddp_timeout"] == 180000


def test_an_override_carries_its_value_and_reads_as_a_set():
    override = Override("launch.master_addr", "1e5")
    assert override == "launch.master_addr=1e5"
    assert load_config("tiny-cpu", overrides=[override]).config.launch.master_addr == "1e5"
    assert load_config("tiny-cpu", overrides=[Override("launch.nproc_per_node", 2)]).config.launch.nproc_per_node == 2


def test_typed_train_options_reach_the_config_as_values(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "detect_machine", lambda: kernels.Machine(cuda=False))
    monkeypatch.setattr("nerft.process.run_program", FakeLauncher())
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "tiny-cpu", "-o", str(run_dir), "--master-addr", "1e5", "--set", "data.name=2024"]
    )
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run_dir / "nerft.yaml").read_text(encoding="utf-8"))
    assert saved["launch"]["master_addr"] == "1e5" and saved["data"]["name"] == "2024"
    assert yaml.safe_load((run_dir / "llamafactory_train.yaml").read_text(encoding="utf-8"))["dataset"] == "2024_train"
