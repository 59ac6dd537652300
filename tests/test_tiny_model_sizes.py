"""`build_tiny_qwen2(size=...)` and scripts/build_tiny_model.py: a larger model of the tiny family."""

import json

import pytest
from conftest import load_script

from nerft.models.tiny import TINY_CONFIG, mid_size


def test_mid_size_keeps_heads_32_wide_and_the_mlp_three_times_the_width():
    assert mid_size(512, 8) == dict(
        hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16
    )
    with pytest.raises(ValueError, match="hidden size 100 is not a multiple of 32"):
        mid_size(100, 2)


def test_script_builds_the_size_asked_with_the_tiny_model_s_tokenizer(tiny_model, tmp_path, capsys):
    out = tmp_path / "mid"
    assert load_script("build_tiny_model").main([str(out), "--hidden", "96", "--layers", "3"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (96, 3, 3)
    assert (
        config["intermediate_size"] == 288
        and config["vocab_size"] == json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    )
    assert (out / "tokenizer.json").read_text() == (tiny_model / "tokenizer.json").read_text()
    assert f"wrote {out}: hidden 96, 3 layers" in capsys.readouterr().out
    assert json.loads((out / "nerft_tiny.json").read_text())["hidden_size"] == 96
    assert TINY_CONFIG["hidden_size"] == 64  # the quick start's model is unchanged


def test_script_refuses_a_hidden_size_heads_cannot_split(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        load_script("build_tiny_model").main([str(tmp_path / "m"), "--hidden", "100"])
    assert info.value.code == 2
    assert "hidden size 100 is not a multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
