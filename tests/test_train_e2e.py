"""End to end on this CPU, no network: the quick start's run (`nerft train tiny-cpu`, the real
`llamafactory-cli train` fully fine-tuning the tiny model on the bundled sample: the session's
`learned_run`) has learned its training sentences, `nerft export` writes it out with the real
`llamafactory-cli export`, transformers loads and generates with the result, and `--resume`
continues it from its last checkpoint."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("session_cache")]


@pytest.fixture(scope="module")
def exported(learned_run, tmp_path_factory):
    """A copy of the learned run (export writes into its run folder) and its real export."""
    work = tmp_path_factory.mktemp("e2e")
    shutil.copytree(learned_run, work / "run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NERFT_CACHE", str(tmp_path_factory.getbasetemp() / "nerft-cache"))
        export = CliRunner().invoke(app, ["export", str(work / "run"), "--out", str(work / "merged")])
    return work, export


def test_training_finishes_with_the_model_logs_and_a_falling_loss(learned_run):
    run = learned_run
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer_config.json",
        "trainer_log.jsonl",
        "training_loss.png",
        "run.json",
        "nerft.yaml",
        "llamafactory_train.yaml",
        "checkpoint-250",
        "checkpoint-500",
    ):
        assert (run / name).exists(), name
    assert not (run / "adapter_config.json").exists()  # a full fine-tune: the whole model, no adapter
    losses = [
        row["loss"] for row in map(json.loads, (run / "trainer_log.jsonl").read_text().splitlines()) if "loss" in row
    ]
    assert len(losses) == 500 // 25 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] > 4 and losses[-1] < 0.5  # from a random model's ~ln(vocab) to a memorised sample
    lines = (run.parent / "train.stdout").read_text().splitlines()
    assert lines[0] == f"run          {run}"
    assert lines[1].startswith("steps        500/500 ")
    assert f"model        {run / 'model.safetensors'}" in lines
    assert f"loss plot    {run / 'training_loss.png'}" in lines
    assert "attention    sdpa (no CUDA)" in lines
    assert (
        f"$ {Path(sys.executable).parent / 'llamafactory-cli'} train {run / 'llamafactory_train.yaml'}"
        in (run.parent / "train.stderr").read_text()
    )


def test_the_learned_run_answers_its_training_sentences(learned_run, tmp_path):
    # The quick start's promise: a model that learned, so that a drifted prompt or a misread
    # answer shows up as a low score. 32 sentences memorised by a ~150k-parameter model.
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--run",
            str(learned_run),
            "--gold",
            str(SAMPLE / "train.jsonl"),
            "--engine",
            "hf",
            "--out-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["records"], report["unparseable"], report["micro"]["support"]) == (32, 0, 69)
    assert report["micro"]["f1"] >= 0.9, report["micro"]


def test_run_json_describes_a_full_fine_tune(learned_run, exported):
    from nerft.runfolder import load_run

    info = load_run(learned_run)
    assert (info.template, info.finetuning_type, info.prompt, info.adapter_dir, info.merged_model) == (
        "qwen",
        "full",
        "compact",
        None,
        None,
    )
    assert Path(info.base_model).name == "tiny-qwen2" and info.cutoff_len == 256
    work, export = exported
    assert export.exit_code == 0, export.stderr[-3000:]
    assert load_run(work / "run").merged_model == work / "merged"


def test_the_exported_model_loads_and_generates_with_transformers(learned_run, exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nerft.runfolder import load_run

    work, export = exported
    assert export.exit_code == 0, export.stderr[-3000:]
    assert export.stdout.strip() == str(work / "merged")
    tokenizer = AutoTokenizer.from_pretrained(work / "merged")
    model = AutoModelForCausalLM.from_pretrained(work / "merged").eval()
    messages = [{"role": "system", "content": "NER"}, {"role": "user", "content": "王立明在杭州。"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(inputs["input_ids"][0]).endswith("<|im_start|>assistant\n")
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]

    trained = AutoModelForCausalLM.from_pretrained(learned_run).eval()
    base = AutoModelForCausalLM.from_pretrained(load_run(learned_run).base_model).eval()
    with torch.no_grad():
        exported_logits = model(**inputs).logits
        trained_logits = trained(**inputs).logits
        base_logits = base(**inputs).logits
    assert torch.allclose(exported_logits, trained_logits, atol=1e-4)  # the export is the trained model
    assert not torch.allclose(exported_logits, base_logits, atol=1e-2)  # and the training changed it


def test_export_again_is_refused_without_force(exported):
    work, _ = exported
    result = CliRunner().invoke(app, ["export", str(work / "run"), "--out", str(work / "merged")])
    assert result.exit_code == 1
    assert "already exists (--force replaces it" in result.stderr


def test_training_into_the_finished_run_is_refused(learned_run):
    result = CliRunner().invoke(app, ["train", "tiny-cpu", "--output-dir", str(learned_run)])
    assert result.exit_code == 1
    assert f"{learned_run} is not empty" in result.stderr


def test_resume_continues_a_copy_of_the_run_from_its_last_checkpoint(learned_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(learned_run, run)
    result = CliRunner().invoke(
        app, ["train", "tiny-cpu", "--output-dir", str(run), "--resume", "--set", "train.max_steps=510"]
    )
    assert result.exit_code == 0, result.stderr[-3000:]
    assert f"Loading model from {run / 'checkpoint-500'}." in result.stderr
    assert "Resuming training from checkpoint with epoch" in result.stderr and "global step 500" in result.stderr
    assert result.stdout.splitlines()[1].startswith("steps        510/510 ")
    assert (run / "checkpoint-510").is_dir()
    # the mean is over every logged loss, before and after the resume (not the trainer's resumed-only figure)
    rows = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) >= 2 and f"(mean {sum(losses) / len(losses):.4f})" in result.stdout.splitlines()[2]
