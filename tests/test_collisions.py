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
