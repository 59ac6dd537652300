"""`RunFolder`: the paths of a run's files and their readers, the trainer log read with one rule."""

from __future__ import annotations

import json

import pytest

from nerft.errors import DataError
from nerft.runfolder import RunFolder, logged_values
from nerft.training.summary import read_summary


def write_log(folder, lines: list[str], *, last_newline: bool = True) -> None:
    text = "\n".join(lines) + ("\n" if last_newline else "")
    (folder / "trainer_log.jsonl").write_text(text, encoding="utf-8")


def test_paths_are_the_run_folders_names(tmp_path):
    folder = RunFolder(tmp_path)
    assert (folder.manifest_path.name, folder.config_path.name, folder.train_yaml.name) == (
        "run.json",
        "nerft.yaml",
        "llamafactory_train.yaml",
    )
    assert folder.eval_dir("data/sample/dev.jsonl") == tmp_path / "eval" / "dev"
    assert folder.data_dir == tmp_path / "data" and not folder.is_run()
    (tmp_path / "nerft.yaml").write_text("x: 1\n")
    assert folder.is_run() and folder.weights() is None and folder.results() == {}


def test_the_trainer_log_is_read_once_with_one_rule(tmp_path):
    rows = [
        {"current_steps": 1, "total_steps": 3, "loss": 2.5},
        {"current_steps": 2, "total_steps": 3, "loss": float("nan")},
        {"current_steps": 2, "total_steps": 3, "eval_loss": 2.0},
        {"current_steps": 3, "total_steps": 3, "loss": 1.5},
    ]
    write_log(tmp_path, [json.dumps(row) for row in rows] + ['{"current_steps": 4, "lo'], last_newline=False)
    folder = RunFolder(tmp_path)
    log = folder.trainer_log()
    assert len(log) == 4  # the half-written last line is the one being written: skipped
    assert folder.trainer_log() is log  # parsed once
    assert logged_values(log, "loss") == [(1, 2.5), (3, 1.5)]  # NaN is not a loss
    summary = read_summary(tmp_path)
    assert (summary.steps, summary.total_steps, summary.final_loss, summary.eval_loss) == (3, 3, 1.5, 2.0)


def test_a_broken_line_inside_the_log_is_an_error_for_every_reader(tmp_path):
    write_log(tmp_path, ['{"current_steps": 1, "loss": 2.0}', "not json", '{"current_steps": 2, "loss": 1.0}'])
    with pytest.raises(DataError, match=r"trainer_log.jsonl:2"):
        RunFolder(tmp_path).trainer_log()
    with pytest.raises(DataError, match=r"trainer_log.jsonl:2"):
        read_summary(tmp_path)


def test_results_and_weights(tmp_path):
    (tmp_path / "train_results.json").write_text('{"train_loss": 0.5}')
    (tmp_path / "all_results.json").write_text('{"train_loss": 0.25, "train_runtime": 12.0}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    folder = RunFolder(tmp_path)
    assert folder.results() == {"train_loss": 0.25, "train_runtime": 12.0}  # all_results.json first
    assert folder.weights() == tmp_path / "model.safetensors"
    assert read_summary(tmp_path).runtime_s == 12.0
