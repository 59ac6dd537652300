"""An output path that is an input path (through a link too) is refused before anything is written."""

import json

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import ConfigError
from nerft.io import refuse_collisions

GOLD = {"text": "张三在北京", "label": {"name": {"张三": [[0, 1]]}}}


@pytest.fixture
def files(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps(GOLD, ensure_ascii=False) + "\n", encoding="utf-8")
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"text": GOLD["text"], "predict": "name:张三"}, ensure_ascii=False) + "\n")
    return gold, predictions


def unchanged(*paths):
    return {path: path.read_bytes() for path in paths}


@pytest.mark.parametrize(
    "extra",
    [
        ["--errors", "{gold}"],
        ["--report", "{gold}"],
        ["--report", "{predictions}"],
        ["--errors", "{link}"],
        ["--report", "{tmp}/report.json", "--errors", "{tmp}/errors.html"],  # the report's errors page
    ],
)
def test_eval_refuses_an_output_that_is_an_input_or_another_output(files, tmp_path, extra):
    gold, predictions = files
    link = tmp_path / "link.jsonl"
    link.symlink_to(gold)
    before = unchanged(gold, predictions)
    args = [a.format(gold=gold, predictions=predictions, link=link, tmp=tmp_path) for a in extra]
    result = CliRunner().invoke(app, ["eval", "--gold", str(gold), "--predictions", str(predictions), *args])
    assert result.exit_code == 1
    assert result.output.startswith("nerft: error: ") and "nerft would overwrite it" in result.output
    assert unchanged(gold, predictions) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gold.jsonl", "link.jsonl", "predictions.jsonl"]


def test_predict_and_convert_refuse_to_write_over_their_input(files, tmp_path):
    gold, predictions = files
    before = unchanged(gold, predictions)
    result = CliRunner().invoke(
        app, ["predict", "--endpoint", "http://127.0.0.1:9/v1", "--data", str(gold), "--out", str(gold)]
    )
    assert result.exit_code == 1 and "--out" in result.output and "is the input --data" in result.output
    result = CliRunner().invoke(app, ["convert", str(predictions), "--to", "clue", "--out", str(predictions)])
    assert result.exit_code == 1 and "is the input SOURCE" in result.output
    assert unchanged(gold, predictions) == before


def test_refuse_collisions_names_both_options(tmp_path):
    with pytest.raises(ConfigError, match=r"--b .*a.txt is the output --a"):
        refuse_collisions({}, {"--a": tmp_path / "a.txt", "--b": tmp_path / "x" / ".." / "a.txt"})
    refuse_collisions(
        {"--in": tmp_path / "a"}, {"--out": tmp_path / "b", "--none": None}
    )  # no collision: nothing raised


@pytest.mark.parametrize("output", ["--report", "--errors", "predictions"])
def test_eval_of_a_model_refuses_the_gold_file_as_an_output_before_predicting(files, tmp_path, output):
    gold, _ = files
    before = unchanged(gold)
    out_dir = tmp_path / "e"
    args = ["eval", "--endpoint", "http://127.0.0.1:9/v1", "--gold", str(gold), "--out-dir", str(out_dir)]
    if output == "predictions":  # the resumable predictions.jsonl is a link to the gold file
        out_dir.mkdir()
        (out_dir / "predictions.jsonl").symlink_to(gold)
    else:
        args += [output, str(gold)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.startswith("nerft: error: ") and "nerft would overwrite it" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert unchanged(gold) == before


def test_eval_report_that_is_not_json_is_refused_before_anything_is_written(files, tmp_path):
    # `--report scores.txt` wrote the report, then took scores.txt for the folder of its pages
    gold, predictions = files
    result = CliRunner().invoke(
        app, ["eval", "--gold", str(gold), "--predictions", str(predictions), "--report", str(tmp_path / "scores.txt")]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"nerft: error: --report {tmp_path / 'scores.txt'}: the report is JSON, give a .json path "
        "(report.md, report.html and the charts are written beside it)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gold.jsonl", "predictions.jsonl"]


def test_prepare_refuses_to_write_over_its_input(sample_dir, tmp_path):
    # preparing a dataset again from its own gold file replaced that file with a part of itself
    out = tmp_path / "data"
    out.mkdir()
    source = out / "cluener_train.gold.jsonl"
    source.write_bytes((sample_dir / "train.jsonl").read_bytes())
    result = CliRunner().invoke(app, ["prepare", "--train", str(source), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"nerft: error: the train gold records {source} is the input --train: nerft would overwrite it "
        "(choose another --out folder or --name)\n"
    )
    assert source.read_bytes() == (sample_dir / "train.jsonl").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["cluener_train.gold.jsonl"]


def test_export_refuses_an_out_folder_holding_what_it_reads(tmp_path):
    """`export --out BASE_MODEL --force` would replace the base model with the merged one."""
    from nerft.runfolder import RunInfo, write_run

    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": str(base)}))
    (run_dir / "adapter_model.safetensors").write_bytes(b"weights")
    write_run(RunInfo(run_dir=run_dir, base_model=str(base), template="qwen", adapter_dir=run_dir))
    before = unchanged(base / "config.json", run_dir / "adapter_model.safetensors")
    for out in (base, tmp_path / "models"):
        (out / "config.json").write_text("{}") if not (out / "config.json").exists() else None
        result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--force"])
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"nerft: error: --out {out.resolve()} holds the input the base model {base}: nerft would delete it "
            "(give --out another path)\n"
        )
    assert unchanged(base / "config.json", run_dir / "adapter_model.safetensors") == before


def test_train_force_refuses_to_delete_its_own_data(sample_dir, tmp_path, monkeypatch, session_cache):
    from conftest import FakeLauncher

    from nerft.training import kernels

    monkeypatch.setattr(kernels, "detect_machine", lambda: kernels.Machine(cuda=False))
    launcher = FakeLauncher()
    monkeypatch.setattr("nerft.process.run_program", launcher)
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(app, ["train", "tiny-cpu", "-o", str(run_dir)]).exit_code == 0
    data = run_dir / "my-train.jsonl"
    data.write_bytes((sample_dir / "train.jsonl").read_bytes())
    result = CliRunner().invoke(
        app, ["train", "tiny-cpu", "-o", str(run_dir), "--force", "--set", f"data.train={data}"]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"nerft: error: --output-dir {run_dir} holds the input data.train {data}: nerft would delete it "
        "(move it out of the run folder, or choose another --output-dir)\n"
    )
    assert data.read_bytes() == (sample_dir / "train.jsonl").read_bytes() and len(launcher.calls) == 1


def test_convert_to_label_studio_writes_the_tasks_and_their_config_together_or_neither(files, tmp_path):
    """The labelling config's place taken by a folder: once the tasks were written, then it failed;
    now it is refused before anything is written (written_together's own all-or-nothing is
    tested in test_concurrency)."""
    _, predictions = files
    out = tmp_path / "tasks.json"
    (tmp_path / "tasks.label_config.xml").mkdir()
    result = CliRunner().invoke(app, ["convert", str(predictions), "--to", "label-studio", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"nerft: error: the labelling config {tmp_path / 'tasks.label_config.xml'}: is a folder, not a file "
        "(give the labelling config a file path)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gold.jsonl", "predictions.jsonl", "tasks.label_config.xml"]
    (tmp_path / "tasks.label_config.xml").rmdir()
    result = CliRunner().invoke(app, ["convert", str(predictions), "--to", "label-studio", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gold.jsonl",
        "predictions.jsonl",
        "tasks.json",
        "tasks.label_config.xml",
    ]
