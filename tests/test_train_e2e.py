"""End to end on this CPU, no network: `nerft train tiny-cpu` runs the real `llamafactory-cli
train` on the bundled sample, then `nerft export` merges the adapter with the real
`llamafactory-cli export`, and transformers loads and generates with the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run (10 steps, ~1 min on 2 cores) and its export, shared by the module."""
    work = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERFT_CACHE", str(tmp_path_factory.getbasetemp() / "nerft-cache"))
        patch.chdir(ROOT)
        train = CliRunner().invoke(app, ["train", "tiny-cpu", "--output-dir", str(work / "run")])
        export = CliRunner().invoke(app, ["export", str(work / "run"), "--out", str(work / "merged")])
    return work, train, export


def test_training_finishes_with_adapter_logs_and_a_finite_loss(trained):
    work, train, _ = trained
    assert train.exit_code == 0, train.stderr[-3000:]
    run = work / "run"
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_log.jsonl", "training_loss.png",
                 "run.json", "nerft.yaml", "llamafactory_train.yaml", "checkpoint-10"):
        assert (run / name).exists(), name
    losses = [row["loss"] for row in map(json.loads, (run / "trainer_log.jsonl").read_text().splitlines()) if "loss" in row]
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    lines = train.stdout.splitlines()
    assert lines[0] == f"run          {run}"
    assert lines[1].startswith("steps        10/10 ")
    assert f"adapter      {run / 'adapter_model.safetensors'}" in lines
    assert f"loss plot    {run / 'training_loss.png'}" in lines
    assert "attention    sdpa (no CUDA)" in lines
    assert f"$ {Path(__import__('sys').executable).parent / 'llamafactory-cli'} train {run / 'llamafactory_train.yaml'}" in train.stderr


def test_run_json_describes_the_run(trained):
    from nerft.runfolder import load_run

    work, _, export = trained
    info = load_run(work / "run")
    assert (info.template, info.finetuning_type, info.prompt, info.adapter_dir) == ("qwen", "lora", "compact", work / "run")
    assert Path(info.base_model).name == "tiny-qwen2" and info.cutoff_len == 256
    assert export.exit_code == 0, export.stderr[-3000:]
    assert info.merged_model == work / "merged"


def test_the_merged_model_loads_and_generates_with_transformers(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nerft.runfolder import load_run

    work, _, export = trained
    assert export.exit_code == 0, export.stderr[-3000:]
    assert export.stdout.strip() == str(work / "merged")
    tokenizer = AutoTokenizer.from_pretrained(work / "merged")
    model = AutoModelForCausalLM.from_pretrained(work / "merged").eval()
    messages = [{"role": "system", "content": "NER"}, {"role": "user", "content": "王立明在杭州。"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(inputs["input_ids"][0]).endswith("<|im_start|>assistant\n")
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]

    info = load_run(work / "run")
    base = AutoModelForCausalLM.from_pretrained(info.base_model).eval()
    with torch.no_grad():
        merged_logits = model(**inputs).logits
        base_logits = base(**inputs).logits
        adapted = PeftModel.from_pretrained(base, info.adapter_dir).eval()
        adapted_logits = adapted(**inputs).logits
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)  # the merge is base + adapter
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # and the training changed something


def test_export_again_is_refused_without_force(trained):
    work, _, _ = trained
    result = CliRunner().invoke(app, ["export", str(work / "run"), "--out", str(work / "merged")])
    assert result.exit_code == 1
    assert "already exists (--force replaces it" in result.stderr


def test_training_into_the_finished_run_is_refused(trained):
    work, _, _ = trained
    result = CliRunner().invoke(app, ["train", "tiny-cpu", "--output-dir", str(work / "run")])
    assert result.exit_code == 1
    assert f"{work / 'run'} is not empty" in result.stderr


def test_resume_continues_a_copy_of_the_run_from_its_last_checkpoint(trained, tmp_path):
    import shutil

    work, train, _ = trained
    assert train.exit_code == 0
    run = tmp_path / "run"
    shutil.copytree(work / "run", run)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        patch.setenv("NERFT_CACHE", str(Path(json.loads((run / "run.json").read_text())["base_model"]).parents[2]))
        result = CliRunner().invoke(app, ["train", "tiny-cpu", "--output-dir", str(run), "--resume", "--set", "train.max_steps=12"])
    assert result.exit_code == 0, result.stderr[-3000:]
    assert f"Loading model from {run / 'checkpoint-10'}." in result.stderr
    assert "Resuming training from checkpoint with epoch 1 and global step 10" in result.stderr
    assert result.stdout.splitlines()[1].startswith("steps        12/12 ")
    assert (run / "checkpoint-12").is_dir()
    # the mean is over every logged loss, before and after the resume (not the trainer's resumed-only figure)
    rows = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) >= 2 and f"(mean {sum(losses) / len(losses):.4f})" in result.stdout.splitlines()[2]
