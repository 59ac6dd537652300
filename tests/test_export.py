"""`nerft export` around `llamafactory-cli export` (recorded here; the real one runs in
tests/test_train_e2e.py): what it is asked, what it refuses, and that --out is never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.runfolder import RunInfo, load_run, write_run


@pytest.fixture
def run_dir(tmp_path) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    write_run(RunInfo(run_dir=run, base_model=str(base), template="qwen", adapter_dir=Path(".")))
    return run


class FakeExport:
    """Plays `llamafactory-cli export`: writes a model into export_dir, or fails with `code`."""

    def __init__(self, code: int = 0):
        self.code = code
        self.args = None

    def __call__(self, argv, **kwargs):
        assert argv[:2] == ["llamafactory-cli", "export"]
        self.args = yaml.safe_load(Path(argv[2]).read_text())
        out = Path(self.args["export_dir"])
        out.mkdir(parents=True, exist_ok=True)  # nerft makes the unique staging folder; save_pretrained accepts it
        (out / "config.json").write_text("{}")
        if self.code == 0:
            (out / "tokenizer_config.json").write_text("{}")
        return self.code


def export(*args):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_export_merges_the_runs_adapter_into_its_base_model(run_dir, tmp_path, monkeypatch):
    fake = FakeExport()
    monkeypatch.setattr("nerft.process.run_program", fake)
    result = export(run_dir, "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "merged")
    assert fake.args == {
        "model_name_or_path": str(tmp_path / "base"),
        "adapter_name_or_path": str(run_dir),
        "template": "qwen",
        "finetuning_type": "lora",
        "trust_remote_code": True,
        "export_dir": fake.args["export_dir"],
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }
    staging = Path(fake.args["export_dir"])  # a unique folder beside --out: two exports never share one
    assert staging.parent == tmp_path and staging.name.startswith(".merged.") and staging.name.endswith(".partial")
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file() and not staging.exists()
    assert load_run(run_dir).merged_model == tmp_path / "merged"
    assert (
        json.loads((run_dir / "run.json").read_text())["adapter_dir"] == "."
    )  # still relative: the run folder can move


def test_export_from_a_relative_run_path_keeps_run_json_valid(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("nerft.process.run_program", FakeExport())
    monkeypatch.chdir(tmp_path)
    assert export("run", "--out", "merged").exit_code == 0
    info = load_run("run")
    assert info.adapter_dir == Path("run") and info.merged_model == tmp_path / "merged"


def test_export_refuses_to_overwrite_without_force(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("nerft.process.run_program", FakeExport())
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text('{"old": true}')
    result = export(run_dir, "--out", tmp_path / "merged")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"nerft: error: {tmp_path / 'merged'} already exists (--force replaces it, or choose another --out)"
    )
    assert export(run_dir, "--out", tmp_path / "merged", "--force").exit_code == 0
    assert json.loads((tmp_path / "merged" / "config.json").read_text()) == {}


def test_force_never_replaces_a_folder_that_is_not_a_model(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("nerft.process.run_program", FakeExport())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("mine")
    result = export(run_dir, "--out", tmp_path / "docs", "--force")
    assert result.exit_code == 1 and "is not a model folder (no config.json)" in result.stderr
    assert (tmp_path / "docs" / "notes.md").exists()


def test_a_failed_export_passes_its_code_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("nerft.process.run_program", FakeExport(code=2))
    result = export(run_dir, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert "llamafactory-cli export exited with code 2" in result.stderr
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.*"))
    assert load_run(run_dir).merged_model is None


def test_a_full_fine_tune_is_exported_from_the_run_folder_without_an_adapter(tmp_path, monkeypatch):
    fake = FakeExport()
    monkeypatch.setattr("nerft.process.run_program", fake)
    run = tmp_path / "run"
    run.mkdir()
    write_run(RunInfo(run_dir=run, base_model="/nowhere", template="qwen", finetuning_type="full"))
    result = export(run, "--out", tmp_path / "m")
    assert result.stderr.strip().endswith(
        "nerft: error: " + f"{run}: a full fine-tune, but no config.json in the run folder (did the training finish?)"
    )
    assert fake.args is None
    (run / "config.json").write_text("{}")
    result = export(run, "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert fake.args["model_name_or_path"] == str(run) and fake.args["finetuning_type"] == "full"
    assert "adapter_name_or_path" not in fake.args  # the base model (/nowhere) is not read at all
    info = load_run(run)
    assert (info.merged_model, info.adapter_dir) == (tmp_path / "m", None)


def test_export_needs_a_lora_run_with_its_base_model(tmp_path):
    result = export(tmp_path, "--out", tmp_path / "m")
    assert result.exit_code == 1 and "not a nerft run folder (no run.json)" in result.stderr
    (tmp_path / "adapter_config.json").write_text("{}")
    write_run(RunInfo(run_dir=tmp_path, base_model="/nowhere", template="qwen", adapter_dir=Path(".")))
    assert "base model /nowhere is not on disk" in export(tmp_path, "--out", tmp_path / "m").stderr
