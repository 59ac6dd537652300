"""`nerft train` before and after LLaMA-Factory: run folder rules (overwrite refusal, --force,
--resume), machine checks, data and model checks, sequence planning, and the summary it prints.
The launch itself is replaced by a recorder here; tests/test_train_e2e.py runs the real one."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import FakeLauncher
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.models.download import TINY_MODEL, find_model
from nerft.training import kernels
from nerft.training.lengths import (
    LengthStats,
    measure_token_lengths,
    plan_sequences,
    round_up,
)
from nerft.training.plan import latest_checkpoint
from nerft.training.summary import read_summary

ROOT = Path(__file__).resolve().parent.parent
CPU = kernels.Machine(cuda=False)


@pytest.fixture(autouse=True)
def _tiny_model_built(session_cache):
    # Built here, so that its progress bars are not in the stderr of whichever test comes first.
    find_model(TINY_MODEL)


@pytest.fixture
def launcher(monkeypatch):
    recorder = FakeLauncher()
    monkeypatch.setattr(kernels, "detect_machine", lambda: CPU)
    monkeypatch.setattr("nerft.process.run_program", recorder)
    return recorder


def invoke(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_a_non_empty_folder_is_refused(launcher, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("tiny-cpu", "-o", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"nerft: error: {tmp_path} is not empty (--resume continues from its latest checkpoint, "
        "--force deletes it and starts over, or choose another --output-dir)"
    )
    assert launcher.calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_deletes_only_a_nerft_run_folder(launcher, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("tiny-cpu", "-o", tmp_path, "--force")
    assert result.exit_code == 1
    assert "is not a nerft run folder (no nerft.yaml): nerft will not delete it" in result.stderr
    assert (tmp_path / "notes.txt").exists()

    run_dir = tmp_path / "run"
    assert invoke("tiny-cpu", "-o", run_dir).exit_code == 0
    (run_dir / "old-result.txt").write_text("from the first run")
    result = invoke("tiny-cpu", "-o", run_dir, "--force")
    assert result.exit_code == 0, result.output
    assert not (run_dir / "old-result.txt").exists()
    assert {"nerft.yaml", "llamafactory_train.yaml", "run.json", "data"} <= {p.name for p in run_dir.iterdir()}
    assert len(launcher.calls) == 2


def test_a_failed_check_leaves_the_old_run_alone_even_with_force(launcher, tmp_path):
    run_dir = tmp_path / "run"
    assert invoke("tiny-cpu", "-o", run_dir).exit_code == 0
    result = invoke("tiny-cpu", "-o", run_dir, "--force", "--set", f"data.train={tmp_path / 'missing.jsonl'}")
    assert result.exit_code == 1
    assert (run_dir / "run.json").exists() and len(launcher.calls) == 1


def test_a_broken_shared_dataset_info_leaves_the_old_run_alone_even_with_force(launcher, tmp_path):
    run_dir, shared = tmp_path / "run", tmp_path / "shared-data"
    assert invoke("tiny-cpu", "-o", run_dir).exit_code == 0
    shared.mkdir()
    (shared / "dataset_info.json").write_text("{broken")
    result = invoke("tiny-cpu", "-o", run_dir, "--force", "--set", f"data.dataset_dir={shared}")
    assert result.exit_code == 1 and "dataset_info.json" in result.stderr
    assert (run_dir / "run.json").exists() and len(launcher.calls) == 1
    assert (shared / "dataset_info.json").read_text() == "{broken"


def test_resume_continues_from_the_highest_checkpoint(launcher, tmp_path):
    run_dir = tmp_path / "run"
    assert invoke("tiny-cpu", "-o", run_dir).exit_code == 0
    for step in (5, 10, 9):
        (run_dir / f"checkpoint-{step}").mkdir()
    assert latest_checkpoint(run_dir) == run_dir / "checkpoint-10"  # by number, not by name
    result = invoke("tiny-cpu", "-o", run_dir, "--resume", "--set", "train.max_steps=20")
    assert result.exit_code == 0, result.output
    args = yaml.safe_load((run_dir / "llamafactory_train.yaml").read_text())
    assert (args["resume_from_checkpoint"], args["max_steps"]) == (str(run_dir / "checkpoint-10"), 20)


def test_resume_needs_a_checkpoint_and_contradicts_force(launcher, tmp_path):
    result = invoke("tiny-cpu", "-o", tmp_path, "--resume")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"nerft: error: {tmp_path}: no checkpoint-* folder to resume from (train without --resume)"
    )
    result = invoke("tiny-cpu", "-o", tmp_path, "--resume", "--force")
    assert "--resume and --force contradict each other" in result.stderr
    assert launcher.calls == []


def test_llamafactory_exit_code_is_passed_through(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "detect_machine", lambda: CPU)
    monkeypatch.setattr("nerft.process.run_program", FakeLauncher(code=3))
    result = invoke("tiny-cpu", "-o", tmp_path / "run")
    assert result.exit_code == 3
    assert "llamafactory-cli train exited with code 3" in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()  # run.json marks a finished run


def test_run_json_is_the_contract_for_inference(launcher, tmp_path):
    from nerft.runfolder import load_run

    run_dir = tmp_path / "run"
    assert invoke("tiny-cpu", "-o", run_dir, "--set", "method.finetuning_type=lora").exit_code == 0
    info = load_run(run_dir)
    assert info.base_model == str(Path(__import__("os").environ["NERFT_CACHE"]) / "models" / "nerft" / "tiny-qwen2")
    assert (info.template, info.finetuning_type, info.prompt, info.quantization_bit) == (
        "qwen",
        "lora",
        "compact",
        None,
    )
    assert (
        info.adapter_dir == run_dir
        and info.cutoff_len == yaml.safe_load((run_dir / "llamafactory_train.yaml").read_text())["cutoff_len"]
    )
    assert json.loads((run_dir / "run.json").read_text())["adapter_dir"] == "."  # the run folder can move


def test_run_json_of_a_full_fine_tune_names_no_adapter(launcher, tmp_path):
    from nerft.runfolder import load_run

    run_dir = tmp_path / "run"
    assert invoke("tiny-cpu", "-o", run_dir).exit_code == 0  # the preset fine-tunes the whole tiny model
    info = load_run(run_dir)
    assert (info.finetuning_type, info.adapter_dir, info.merged_model) == ("full", None, None)


@pytest.mark.parametrize(("flag", "fix"), [("bf16", "train.bf16=false"), ("fp16", "train.fp16=false")])
def test_mixed_precision_is_refused_without_cuda(launcher, tmp_path, flag, fix):
    result = invoke("tiny-cpu", "-o", tmp_path / "run", "--set", f"train.{flag}=true")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"nerft: error: train.{flag} is true but this machine has no CUDA GPU: LLaMA-Factory cannot train in {flag} on a CPU "
        f"(add --set {fix} to train in float32 here)"
    )


def test_bf16_on_a_gpu_without_bf16_suggests_fp16():
    from nerft.training.plan import Requirements, can_run_here

    v100 = kernels.Machine(cuda=True, gpu_count=1, bf16=False, gpu_name="Tesla V100", compute_capability="7.0")
    [blocker] = can_run_here(SimpleNamespace(requirements=Requirements(bf16=True)), v100)
    assert str(blocker.error()) == (
        "train.bf16 is true but Tesla V100 (compute capability 7.0) has no bf16: it needs compute capability 8.0 (Ampere) or newer"
        " (add --set train.bf16=false --set train.fp16=true)"
    )


def test_a_model_that_is_not_downloaded_says_how_to_get_it(launcher, tmp_path):
    result = invoke("tiny-cpu", "-o", tmp_path / "run", "--set", "model.model_name_or_path=Qwen/Qwen2.5-7B-Instruct")
    assert result.exit_code == 1
    cache = Path(__import__("os").environ["NERFT_CACHE"]) / "models" / "Qwen" / "Qwen2.5-7B-Instruct"
    assert result.stderr.strip() == (
        f"nerft: error: model Qwen/Qwen2.5-7B-Instruct is not downloaded (looked in {cache}) "
        "(run `nerft download Qwen/Qwen2.5-7B-Instruct`, or copy the model folder there)"
    )


def test_bad_data_is_reported_with_file_and_line_and_nothing_is_written(launcher, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "北京", "label": {"address": {"北京": [[0, 1]]}}}\n{"text": "上海", "label": {"address": {"北京": [[0, 1]]}}}\n',
        encoding="utf-8",
    )
    result = invoke(
        "tiny-cpu",
        "-o",
        tmp_path / "run",
        "--set",
        f"data.train={bad}",
        "--set",
        "data.dev=null",
        "--set",
        "data.val_size=0",
    )
    assert result.exit_code == 1
    assert f"{bad}:2:" in result.stderr
    assert not (tmp_path / "run").exists() and launcher.calls == []


def write_registered(tmp_path: Path) -> Path:
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "dataset_info.json").write_text(
        json.dumps({"mine_train": {"file_name": "mine_train.json", "formatting": "alpaca"}})
    )
    (data / "mine_train.json").write_text(
        json.dumps(
            [{"instruction": "北京", "input": "", "output": "address:北京", "system": "NER"}], ensure_ascii=False
        )
    )
    return data


def test_a_registered_dataset_that_does_not_exist_is_reported(launcher, tmp_path):
    data = write_registered(tmp_path)
    base = [
        "tiny-cpu",
        "-o",
        tmp_path / "run",
        "--set",
        "data.train=null",
        "--set",
        "data.dev=null",
        "--set",
        f"dataset.dataset_dir={data}",
    ]
    result = invoke(*base, "--set", "dataset.dataset=cluener_train")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"nerft: error: dataset 'cluener_train' is not registered in {data / 'dataset_info.json'} (it has: mine_train)"
    )
    result = invoke(*base, "--set", "dataset.dataset=mine_train")
    assert result.exit_code == 0, result.output
    args = yaml.safe_load((tmp_path / "run" / "llamafactory_train.yaml").read_text())
    assert (args["dataset"], args["dataset_dir"], args["eval_strategy"]) == ("mine_train", str(data), "no")


def test_plan_without_packing_is_the_longest_example_rounded_up():
    stats = LengthStats(count=10, longest=81, mean=40.0, method="tokens")
    plan = plan_sequences(
        stats, cutoff_len="auto", packing=False, per_device_train_batch_size=4, per_device_eval_batch_size=2
    )
    assert (plan.cutoff_len, plan.per_device_train_batch_size, plan.per_device_eval_batch_size) == (88, 4, 2)
    plan = plan_sequences(
        stats, cutoff_len=64, packing=False, per_device_train_batch_size=4, per_device_eval_batch_size=2
    )
    assert plan.cutoff_len == 64 and "the longest example (81 tokens) will be truncated" in plan.note


def test_plan_with_packing_fits_a_batch_of_mean_examples_in_one_pack():
    stats = LengthStats(count=10, longest=80, mean=63.0, method="tokens")
    # max(80 + 1, 4 * 63 = 252) -> 256
    plan = plan_sequences(
        stats, cutoff_len="auto", packing=True, per_device_train_batch_size=4, per_device_eval_batch_size=4
    )
    assert (plan.cutoff_len, plan.per_device_train_batch_size, plan.per_device_eval_batch_size) == (256, 1, 1)
    # one example per batch: the pack must still hold the longest example, + 1 for LLaMA-Factory's packing
    plan = plan_sequences(
        stats, cutoff_len="auto", packing=True, per_device_train_batch_size=1, per_device_eval_batch_size=1
    )
    assert plan.cutoff_len == 88
    plan = plan_sequences(
        stats, cutoff_len=64, packing=True, per_device_train_batch_size=4, per_device_eval_batch_size=4
    )
    assert "examples longer than 63 tokens (the longest is 80) are dropped" in plan.note


def test_round_up():
    assert [round_up(value) for value in (1, 8, 9, 252.5)] == [8, 8, 16, 256]


def test_token_lengths_match_the_models_chat_template(tiny_model):
    from transformers import AutoTokenizer

    examples = [
        {"instruction": "王立明在杭州。", "input": "", "output": "name:王立明\naddress:杭州", "system": "NER"},
        {"instruction": "今天天气很好", "input": "", "output": "无", "system": "NER"},
    ]
    stats = measure_token_lengths(examples, tokenizer_dir=tiny_model, template="qwen")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = [
        len(
            tokenizer.apply_chat_template(
                [
                    {"role": "system", "content": e["system"]},
                    {"role": "user", "content": e["instruction"]},
                    {"role": "assistant", "content": e["output"]},
                ],
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        )
        for e in examples
    ]
    assert (stats.count, stats.longest, stats.mean) == (2, max(expected), sum(expected) / 2)


SUMMARY_LOG = [
    {"current_steps": 5, "total_steps": 10, "loss": 6.9, "epoch": 0.5},
    {"current_steps": 10, "total_steps": 10, "loss": 6.25, "epoch": 1.0},
    {"current_steps": 10, "total_steps": 10, "eval_loss": 6.5, "epoch": 1.0},
]


def test_summary_is_read_from_llamafactory_files(tmp_path):
    (tmp_path / "trainer_log.jsonl").write_text("\n".join(json.dumps(row) for row in SUMMARY_LOG) + "\n{cut sho")
    (tmp_path / "all_results.json").write_text(
        json.dumps({"train_loss": 6.6, "train_runtime": 75.5, "train_samples_per_second": 0.4, "epoch": 1.0})
    )
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "training_loss.png").write_bytes(b"")
    summary = read_summary(tmp_path, packed=True)
    assert (summary.steps, summary.total_steps, summary.final_loss, summary.train_loss, summary.eval_loss) == (
        10,
        10,
        6.25,
        6.6,
        6.5,
    )
    assert summary.format().splitlines() == [
        f"run          {tmp_path}",
        "steps        10/10 (epoch 1.00)",
        "final loss   6.2500 (mean 6.6000)",
        "eval loss    6.5000",
        "runtime      0:01:15.50 (75.5 s)",
        "samples/s    0.400 (packed sequences)",
        f"adapter      {tmp_path / 'adapter_model.safetensors'}",
        f"loss plot    {tmp_path / 'training_loss.png'}",
    ]
    # resumed: the trainer's 6.6 covers only the resumed steps; the logged losses give (6.9 + 6.25) / 2
    assert read_summary(tmp_path, packed=True, resumed=True).train_loss == pytest.approx(6.575)


def test_summary_of_a_full_fine_tune_names_the_model_not_an_adapter(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert f"model        {tmp_path / 'model.safetensors'}" in read_summary(tmp_path).format().splitlines()


def test_a_worker_node_says_its_results_are_on_node_0(launcher, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "tiny-cpu",
        "-o",
        run,
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--master-addr",
        "10.0.0.1",
        "--master-port",
        "29500",
    )
    assert result.exit_code == 0, result.output
    assert launcher.calls[0][1] == {
        "FORCE_TORCHRUN": "1",
        "NNODES": "2",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "1",  # one CPU process per node
        "ACCELERATE_TORCH_DEVICE": "cpu",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert result.stdout.splitlines()[0] == (
        "node 1 of 2 finished; the results (weights, checkpoints, logs, run.json) are on node 0 (10.0.0.1), in its run folder"
    )
    assert "run          " not in result.stdout and "-" * 3 not in result.stdout
    assert (run / "nerft.yaml").is_file() and not (run / "run.json").exists()  # no manifest promising weights it lacks


def test_a_worker_node_cannot_resume_without_node_0s_checkpoint(launcher, tmp_path):
    (tmp_path / "run").mkdir()
    result = invoke(
        "tiny-cpu",
        "-o",
        tmp_path / "run",
        "--resume",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--master-addr",
        "10.0.0.1",
        "--master-port",
        "29500",
    )
    assert result.exit_code == 1 and launcher.calls == []
    assert "share the run folder, or copy node 0's checkpoint-N here" in result.stderr


def test_summary_of_an_empty_folder_says_what_is_missing(tmp_path):
    text = read_summary(tmp_path).format()
    assert "adapter      - (not found)" in text and "steps        - (epoch -)" in text


def test_registered_datasets_are_split_as_llamafactory_splits_them(launcher, tmp_path):
    # "mine_train, mine_dev": LLaMA-Factory strips the names; dataset_info.json written with a BOM
    data = write_registered(tmp_path)
    info = json.loads((data / "dataset_info.json").read_text())
    info["mine_dev"] = {"file_name": "mine_train.json", "formatting": "alpaca"}
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8-sig")
    result = invoke(
        "tiny-cpu",
        "-o",
        tmp_path / "run",
        "--set",
        "data.train=null",
        "--set",
        "data.dev=null",
        "--set",
        f"dataset.dataset_dir={data}",
        "--set",
        "dataset.dataset=mine_train, mine_dev",
    )
    assert result.exit_code == 0, result.output
    args = yaml.safe_load((tmp_path / "run" / "llamafactory_train.yaml").read_text())
    assert args["dataset"] == "mine_train, mine_dev"
    # both datasets measured with the model's tokenizer (before: KeyError ' mine_dev', or a BOM JSONDecodeError)
    assert "of mean length 33.0 (longest 33, tokens of tiny-qwen2's tokenizer, template qwen)" in result.stderr
