"""`--ray` and its options, refused where they cannot apply, before any cluster is reached."""

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import ConfigError, DataError
from nerft.inference.options import EngineOptions
from nerft.inference.predict import open_engine
from nerft.runfolder import load_run


def test_ray_runs_engines_of_a_run_not_an_endpoint(tiny_run):
    with pytest.raises(ConfigError, match="an endpoint has its own --concurrency"):
        open_engine(EngineOptions(engine="openai", endpoint="http://127.0.0.1:9/v1", ray="default"))
    with pytest.raises(ConfigError, match="--ray needs --run RUN_DIR"):
        open_engine(EngineOptions(engine="hf", ray="default"))
    with pytest.raises(ConfigError, match="--ray-actors and --ray-cpus are for --ray"):
        open_engine(EngineOptions(engine="hf", ray_actors=2), load_run(tiny_run))


def test_predict_with_ray_options_but_no_ray_is_one_error_line(tiny_run):
    result = CliRunner().invoke(app, ["predict", "--run", str(tiny_run), "--text", "张三", "--ray-cpus", "2"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "nerft: error: --ray-actors and --ray-cpus are for --ray"


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["--ray"], ["--ray", "default"]),
        (["--ray", "--json"], ["--ray", "default", "--json"]),
        (["--ray", "10.0.0.1:6379", "--json"], ["--ray", "10.0.0.1:6379", "--json"]),
        (["--ray=auto"], ["--ray=auto"]),
        (["--text", "--ray"], ["--text", "--ray"]),  # the sentence "--ray", not the option
        (["--ray", "--", "--ray"], ["--ray", "default", "--", "--ray"]),
        (["--json", "--ray", "--text", "x"], ["--json", "--ray", "default", "--text", "x"]),
    ],
)
def test_bare_ray_gets_the_default_address_before_typer_parses(argv, parsed):
    from nerft.cli.common import with_optional_values

    assert with_optional_values(argv, {"--ray", "--text"}) == parsed


def test_bare_ray_reaches_the_engine_choice():
    """`--ray` without an address parses (Typer alone would say it requires an argument)."""
    argv = ["predict", "--endpoint", "http://127.0.0.1:9/v1", "--text", "张三"]
    for bare in (["--ray"], ["--ray", "--json"]):  # last, or before another option (not its value)
        result = CliRunner().invoke(app, argv + bare)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines()[-1].endswith("an endpoint has its own --concurrency")
        assert "--json" not in result.stderr


def test_ray_predicts_files_not_sentences_typed_in(tiny_run):
    result = CliRunner().invoke(app, ["predict", "--run", str(tiny_run), "--text", "张三", "--ray", "local"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "nerft: error: --ray predicts a file or folder of JSON Lines (--data, --gold), not --text or stdin"
    )


def test_a_folder_is_its_json_lines_files_in_name_order(tmp_path):
    """What Ray Data reads for `--ray --data FOLDER`, and the driver reads again to resume: the
    .jsonl and .json files below it, by name, without those Ray leaves out (`_SUCCESS`, `.x`)."""
    from nerft.inference.ray_data import jsonl_files

    for name in ["b.jsonl", "a.json", "sub/c.jsonl", "_SUCCESS", ".hidden.jsonl", "_tmp/d.jsonl", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"text": "张三"}\n', encoding="utf-8")
    files, _ = jsonl_files(tmp_path)
    assert files == [str(tmp_path / name) for name in ["a.json", "b.jsonl", "sub/c.jsonl"]]
    assert jsonl_files(tmp_path / "b.jsonl")[0] == [str(tmp_path / "b.jsonl")]
    with pytest.raises(DataError, match="no such file or folder"):
        jsonl_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no JSON Lines file \(.jsonl, .json\) in the folder"):
        jsonl_files(tmp_path / "empty")


def test_each_line_read_for_ray_is_checked_like_predict_checks_it():
    import pyarrow as pa

    from nerft.inference.ray_data import jsonl_records

    def records(text: str, labels=None):
        return list(jsonl_records(pa.BufferReader(text.encode()), "in.jsonl", labels))

    read = records('{"text": "张三", "id": 7}\n\n{"text": "李四"}')  # blank lines skipped, no final newline
    assert [(record.text, record.id) for record in read] == [("张三", 7), ("李四", None)]
    with pytest.raises(DataError, match=r"^in.jsonl:2: broken JSON"):
        records('{"text": "张三"}\n{"text": ')
    with pytest.raises(DataError, match=r"in.jsonl:1: .*empty text"):
        records('{"text": " "}\n')
    # what every other reader refuses in one line, as single-process predict does (io.json_line)
    with pytest.raises(DataError, match=r"^in.jsonl:2: not UTF-8 text \(invalid start byte at byte 10\)$"):
        list(
            jsonl_records(pa.BufferReader('{"text": "张三"}\n{"text": "'.encode() + b"\xff" + b'"}'), "in.jsonl", None)
        )
    with pytest.raises(DataError, match=r"^in.jsonl:1: JSON nested too deeply \(--ray reads CLUE NER JSON Lines\)$"):
        records("[" * 200_000 + "]" * 200_000)
    with pytest.raises(
        DataError, match=r"^in.jsonl:1: a number of more than 4,300 digits \(--ray reads CLUE NER JSON Lines\)$"
    ):
        records('{"text": "张三", "id": ' + "9" * 5000 + "}")


@pytest.mark.parametrize(("kept", "start"), [(0, (0, 0)), (5, (0, 5)), (16, (0, 16)), (20, (1, 4)), (32, (1, 16))])
def test_a_resumed_ray_run_reads_from_the_first_record_not_kept(tmp_path, kept, start):
    """The kept rows are checked against the input's first records; Ray Data then starts at
    (file, records of it to skip): the whole first file kept is skipped by a read of it that
    yields nothing, the second file from its fifth record."""
    import json
    from pathlib import Path

    from nerft.inference.predictions import PredictionCounts, ResumablePredictions
    from nerft.inference.ray_data import jsonl_files, resume_point

    sample = (Path(__file__).resolve().parents[1] / "data" / "sample" / "train.jsonl").read_text(encoding="utf-8")
    lines = sample.splitlines(keepends=True)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(lines[:16]), encoding="utf-8")
    (tmp_path / "in" / "b.jsonl").write_text("".join(lines[16:]), encoding="utf-8")
    empty = {"entities": [], "dropped": [], "unparseable": False, "finish_reason": "stop"}
    rows = [{"text": json.loads(line)["text"], **empty} for line in lines]
    out = tmp_path / "pred.jsonl"
    Path(f"{out}.partial").write_text("".join(json.dumps(row) + "\n" for row in rows[:kept]), encoding="utf-8")
    rows_seen: list[dict] = []
    counts = PredictionCounts()
    files, filesystem = jsonl_files(tmp_path / "in")
    store = ResumablePredictions(out, {"engine": "hf"})
    assert resume_point(store, files, filesystem, None, counts, rows_seen.append) == start
    assert counts.resumed == kept and [row["text"] for row in rows_seen] == [row["text"] for row in rows[:kept]]
