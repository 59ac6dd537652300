"""The GPU memory estimator and the config reader behind `nerft doctor --config`."""

from __future__ import annotations

import json

import pytest

from nerft.doctor.memory import GIB, estimate_training_memory, trainable_params
from nerft.errors import ConfigError
from nerft.models.download import find_model
from nerft.models.shapes import KNOWN_MODELS, ModelShape, resolve_model_shape, shape_from_config
from nerft.training.plan import read_plan
from nerft.training.settings import TrainingSettings

QWEN7B = KNOWN_MODELS["qwen2.5-7b-instruct"]


@pytest.mark.parametrize(
    "name, published",
    [  # parameter counts the Qwen2.5 model cards report (safetensors totals)
        ("qwen2.5-0.5b-instruct", 494_032_768),
        ("qwen2.5-1.5b-instruct", 1_543_714_304),
        ("qwen2.5-3b-instruct", 3_085_938_688),
        ("qwen2.5-7b-instruct", 7_615_616_512),
        ("qwen2.5-14b-instruct", 14_770_033_664),
    ],
)
def test_parameter_counts_match_the_published_ones(name, published):
    assert KNOWN_MODELS[name].params() == published


def test_qwen3_8b_parameters_and_lora_by_hand():
    shape = resolve_model_shape("Qwen/Qwen3-8B")
    assert shape is KNOWN_MODELS["qwen3-8b"] and resolve_model_shape("qwen/qwen3-8b") is shape
    # the model card's 8,190,735,360 less Qwen3's per-head q/k RMSNorms (36 layers x 2 x 128 = 9,216),
    # which the estimate leaves out
    assert shape.params() == 8_190_735_360 - 9_216
    # head_dim 128: q 4096 -> 32 x 128, k/v 4096 -> 8 x 128; r * (in + out) per linear layer:
    # q 8192, k 5120, v 5120, o 8192, gate/up 16384 twice, down 16384 = 75776; * 8 * 36 layers
    assert trainable_params(TrainingSettings(model="m"), shape) == 8 * 75776 * 36 == 21_823_488


def test_the_presets_are_estimated():
    for preset, model, gib in (("qwen3-8b", "Qwen/Qwen3-8B", 19.9), ("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", 5.4)):
        plan = read_plan(preset).settings
        shape = resolve_model_shape(plan.model)
        assert (plan.model, shape is not None) == (model, True)
        assert round(estimate_training_memory(plan, shape, device="gpu").total / 2**30, 1) == gib


def test_lora_trainable_parameters_match_what_llamafactory_prints():
    # r * sum(in + out) per layer: q 3584+3584, k 3584+512, v 3584+512, o 3584+3584,
    # gate/up 3584+18944 twice, down 18944+3584 = 90112; * 8 * 28 layers
    assert trainable_params(TrainingSettings(model="m"), QWEN7B) == 8 * 90112 * 28 == 20_185_088
    # q and v only, rank 16: (7168 + 4096) * 16 * 28
    assert trainable_params(TrainingSettings(model="m", lora_rank=16, lora_target="q_proj,v_proj"), QWEN7B) == 5_046_272


def test_full_and_freeze_trainable_parameters():
    assert trainable_params(TrainingSettings(model="m", finetuning_type="full"), QWEN7B) == 7_615_616_512
    # the last 2 layers: 233,050,624 linear weights and biases + 2 norms of 3584 each
    layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944 + (3584 + 2 * 512)
    assert layer == 233_050_624
    assert trainable_params(TrainingSettings(model="m", finetuning_type="freeze"), QWEN7B) == 2 * (layer + 2 * 3584)


def test_estimate_of_7b_lora_bf16_by_hand():
    plan = TrainingSettings(model="m", bf16=True, cutoff_len=1024, per_device_train_batch_size=1)
    estimate = estimate_training_memory(plan, QWEN7B, device="gpu")
    tokens = 1024
    assert estimate.parts["weights"] == 7_615_616_512 * 2
    assert estimate.parts["trainable"] == 20_185_088 * 16
    # checkpointed: one layer input (3584) per layer, plus one layer's 6h + 2kv + 4i recomputed
    assert estimate.parts["activations"] == tokens * 2 * (28 * 3584 + 6 * 3584 + 2 * 512 + 4 * 18944)
    assert estimate.parts["logits"] == tokens * 152_064 * (2 + 12)
    assert estimate.parts["overhead"] == GIB
    subtotal = sum(value for key, value in estimate.parts.items() if key != "fragmentation")
    assert estimate.parts["fragmentation"] == int(0.1 * subtotal)
    assert round(estimate.total / GIB, 1) == 19.7


def test_estimate_of_7b_qlora_keeps_embeddings_and_lm_head_in_bf16():
    plan = TrainingSettings(model="m", bf16=True, quantization_bit=4, cutoff_len=1024, per_device_train_batch_size=1)
    estimate = estimate_training_memory(plan, QWEN7B, device="gpu")
    linear = 28 * 233_050_624
    other = 7_615_616_512 - linear  # embeddings, lm_head, norms
    assert other == 2 * 152_064 * 3584 + 57 * 3584
    assert estimate.parts["weights"] == int(linear * 0.516 + other * 2)
    assert round(estimate.total / GIB, 1) == 9.8


def test_without_gradient_checkpointing_every_layer_keeps_its_activations():
    plan = TrainingSettings(
        model="m", bf16=True, cutoff_len=1024, per_device_train_batch_size=1, gradient_checkpointing=False
    )
    estimate = estimate_training_memory(plan, QWEN7B, device="gpu")
    assert estimate.parts["activations"] == 1024 * 2 * 28 * (6 * 3584 + 2 * 512 + 4 * 18944)


def test_full_fine_tuning_of_7b_needs_what_llamafactorys_table_says():
    plan = TrainingSettings(model="m", finetuning_type="full", bf16=True, cutoff_len=512, per_device_train_batch_size=1)
    estimate = estimate_training_memory(plan, QWEN7B, device="gpu")
    assert estimate.parts["weights"] == 0
    assert 16 * 7_615_616_512 / 1e9 == pytest.approx(121.8, abs=0.1)  # LLaMA-Factory's README: 120 GB
    assert estimate.parts["trainable"] == 16 * 7_615_616_512


def test_cpu_estimates_use_float32():
    plan = TrainingSettings(model="m", cutoff_len=64, per_device_train_batch_size=2)
    estimate = estimate_training_memory(plan, QWEN7B, device="cpu")
    assert estimate.parts["weights"] == 7_615_616_512 * 4
    assert estimate.parts["logits"] == 128 * 152_064 * 16


def test_activation_formula_matches_what_autograd_saves():
    """Count the bytes autograd saves for backward on a small random Qwen2 with LoRA on all linear
    layers (float32, SDPA, no checkpointing): the per-layer formula must be within 5%."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=256,
        intermediate_size=704,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=3,
        vocab_size=1000,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.0))
    model.train()
    batch, length = 2, 128
    ids = torch.randint(0, 1000, (batch, length))
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids)
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    measured = sum(size for pointer, size in saved.items() if pointer not in parameters)

    plan = TrainingSettings(
        model="m", cutoff_len=length, per_device_train_batch_size=batch, gradient_checkpointing=False
    )
    estimate = estimate_training_memory(plan, shape_from_config(config.to_dict(), name="m"), device="cpu")
    assert estimate.parts["activations"] == batch * length * 4 * 3 * (6 * 256 + 2 * 128 + 4 * 704) == 14_155_776
    assert measured == pytest.approx(estimate.parts["activations"], rel=0.05)


# --- which model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Qwen/Qwen2.5-7B-Instruct", "models/Qwen/Qwen2.5-7B-Instruct/", "qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B"]
)
def test_known_models_are_found_by_name(name):
    assert resolve_model_shape(name) is QWEN7B


def test_a_local_folder_is_read_from_its_config_json(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 1024,
                "tie_word_embeddings": True,
            }
        )
    )
    shape = resolve_model_shape(str(tmp_path))
    assert shape == ModelShape(str(tmp_path), 2, 64, 128, 4, 2, 1024, True, None, True)
    # per layer: q 64*64, k and v 64*32 each, o 64*64, mlp 3*64*128, biases 64+32+32, norms 2*64
    per_layer = 4096 + 2 * 2048 + 4096 + 3 * 8192 + 128 + 128
    assert shape.params() == 2 * per_layer + 1024 * 64 + 64


def test_a_downloaded_hub_model_is_read_from_nerfts_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFT_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "Qwen" / "Qwen2.5-0.5B-Instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 896,
                "intermediate_size": 4864,
                "num_hidden_layers": 24,
                "num_attention_heads": 14,
                "num_key_value_heads": 2,
                "vocab_size": 151936,
                "tie_word_embeddings": True,
            }
        )
    )
    assert find_model("Qwen/Qwen2.5-0.5B-Instruct", build=False) == folder
    shape = resolve_model_shape("Qwen/Qwen2.5-0.5B-Instruct")
    assert shape.name == "Qwen/Qwen2.5-0.5B-Instruct" and shape.params() == 494_032_768
    assert find_model("Qwen/Qwen2.5-7B-Instruct", build=False) is None


def test_the_built_in_tiny_model_is_known():
    shape = resolve_model_shape("nerft:tiny-qwen2")
    assert (shape.layers, shape.hidden, shape.vocab) == (2, 64, 1024)


def test_unknown_models_give_none():
    assert resolve_model_shape("someone/mystery-13b") is None


# --- reading configs ----------------------------------------------------------------------------


def test_a_flat_llamafactory_yaml_is_read(tmp_path):
    path = tmp_path / "llamafactory_train.yaml"
    path.write_text(
        "model_name_or_path: Qwen/Qwen2.5-7B-Instruct\nfinetuning_type: lora\nlora_target: [q_proj, v_proj]\n"
        "quantization_bit: 4\nbf16: true\ncutoff_len: 768\nper_device_train_batch_size: 2\ndisable_gradient_checkpointing: true\n"
    )
    read = read_plan(path)
    plan = read.settings
    assert (plan.model, plan.quantization_bit, plan.bf16, plan.cutoff_len, plan.per_device_train_batch_size) == (
        "Qwen/Qwen2.5-7B-Instruct",
        4,
        True,
        768,
        2,
    )
    assert plan.lora_target == "q_proj,v_proj" and plan.gradient_checkpointing is False
    assert read.source == str(path)


def test_a_sectioned_nerft_config_is_read(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "data:\n  train: data/sample/train.jsonl\n"
        "model:\n  model_name_or_path: nerft:tiny-qwen2\n  enable_liger_kernel: auto\n"
        "method:\n  lora_rank: 4\ndataset:\n  cutoff_len: auto\ntrain:\n  per_device_train_batch_size: 4\n  bf16: false\n"
    )
    read = read_plan(path)
    plan = read.settings
    assert (plan.model, plan.lora_rank, plan.per_device_train_batch_size, plan.bf16) == (
        "nerft:tiny-qwen2",
        4,
        4,
        False,
    )
    # no packing: the sample's longest example through the tiny tokenizer, 80 tokens (a multiple of 8); batch kept
    assert (plan.cutoff_len, plan.per_device_train_batch_size, read.cutoff_auto) == (80, 4, True)
    packed = tmp_path / "packed.yaml"
    packed.write_text(path.read_text().replace("cutoff_len: auto\n", "cutoff_len: auto\n  neat_packing: true\n"))
    read = read_plan(packed)
    plan = read.settings
    # packing: one pack of about 4 mean examples, round_up(4 * 64.5 = 258) = 264, one pack per device
    assert (plan.cutoff_len, plan.per_device_train_batch_size, plan.packing) == (264, 1, True)
    assert "holds about 4.1 examples" in read.sequence_note
    assert read.nerft_config and plan.deepspeed is None
    zero2 = tmp_path / "zero2.yaml"
    zero2.write_text(path.read_text().replace("method:\n", "method:\n  deepspeed: zero2\n"))
    assert read_plan(zero2).settings.deepspeed == "zero2"
    flat = tmp_path / "flat.yaml"
    flat.write_text("model_name_or_path: x\ndeepspeed: ds.json\n")
    assert (read_plan(flat).nerft_config, read_plan(flat).settings.deepspeed) == (False, "ds.json")
    assert plan.enable_liger_kernel is False


def test_config_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        read_plan(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_name_or_path: x\nbf16: [true\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: broken YAML"):
        read_plan(broken)
    modelless = tmp_path / "modelless.yaml"
    modelless.write_text("bf16: true\n")
    with pytest.raises(ConfigError, match="modelless.yaml: no model_name_or_path"):
        read_plan(modelless)
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("model_name_or_path: x\ncutoff_len: lots\n")
    with pytest.raises(ConfigError, match="cutoff_len: cannot read 'lots'"):
        read_plan(bad_value)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"model_name_or_path: caf\xe9\n")
    # the bad byte's line and its offset: "model_name_or_path: caf" is 23 bytes
    with pytest.raises(ConfigError, match=r"latin1\.yaml:1: not UTF-8 text \(byte 23\)$"):
        read_plan(latin1)
