"""Faults of the machine (a full disk, a read-only or forbidden folder, a path through a file, a
name too long) end in one `nerft: error: PATH: reason` line and exit 1 for every command, with
nothing half-written; an output path that cannot be a file is refused before any work.

Tests may run as root, where `chmod` stops no write: full and read-only disks are simulated by
the kernel's own error raised from the one place nerft flushes a file (`os.fsync` in
`nerft.io.atomic_writer`); paths through a file and names too long are real.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import environment_fault

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
GOLD = SAMPLE / "dev.jsonl"


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def predictions_file(folder: Path) -> Path:
    path = folder / "predictions.jsonl"
    rows = [{**json.loads(line), "predict": "无"} for line in GOLD.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def one_error_line(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()[-1:]
    assert line.startswith("nerft: error: ")
    assert "Traceback" not in result.output
    return line


FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}


@pytest.fixture(params=sorted(FAULTS), ids=lambda code: errno.errorcode[code])
def failing_disk(request, monkeypatch):
    """Every file nerft writes fails at its flush with `request.param`, as the kernel reports it."""
    code = request.param

    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("nerft.io.os.fsync", fsync)
    return code


def test_prepare_on_a_failing_disk(tmp_path, failing_disk):
    out = tmp_path / "dataset"
    line = one_error_line(invoke("prepare", "--train", SAMPLE / "train.jsonl", "--out", out))
    assert line.startswith(f"nerft: error: {out}/") and line.endswith(f": {FAULTS[failing_disk]}")
    assert not any(path.is_file() for path in out.rglob("*")) if out.exists() else True


def test_eval_on_a_failing_disk(tmp_path, failing_disk):
    predictions = predictions_file(tmp_path)
    before = predictions.read_bytes()
    report = tmp_path / "report.json"
    line = one_error_line(invoke("eval", "--gold", GOLD, "--predictions", predictions, "--report", report))
    assert line == f"nerft: error: {report}: {FAULTS[failing_disk]}"
    assert not report.exists() and predictions.read_bytes() == before


def test_convert_on_a_failing_disk(tmp_path, failing_disk):
    out = tmp_path / "records.jsonl"
    line = one_error_line(invoke("convert", GOLD, "--to", "doccano", "--out", out))
    assert line == f"nerft: error: {out}: {FAULTS[failing_disk]}"
    assert not out.exists()


def test_an_output_that_is_a_folder_is_refused_before_any_prediction(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    # The endpoint is not there: a refusal that came after predicting would name it instead.
    result = invoke("predict", "--endpoint", "http://127.0.0.1:9/v1", "--data", GOLD, "--out", folder)
    assert one_error_line(result) == f"nerft: error: --out {folder}: is a folder, not a file (give --out a file path)"
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("option", ["--report", "--errors"])
def test_eval_outputs_that_cannot_be_files(tmp_path, option):
    predictions = predictions_file(tmp_path)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    result = invoke("eval", "--gold", GOLD, "--predictions", predictions, option, folder)
    assert "is a folder, not a file" in one_error_line(result)
    a_file = tmp_path / "a_file"
    a_file.write_text("kept\n")
    result = invoke("eval", "--gold", GOLD, "--predictions", predictions, option, a_file / "x.json")
    assert f"{a_file} is a file, not a folder" in one_error_line(result)
    assert a_file.read_text() == "kept\n"
    too_long = tmp_path / ("x" * 300 + ".json")
    result = invoke("eval", "--gold", GOLD, "--predictions", predictions, option, too_long)
    assert one_error_line(result) == f"nerft: error: {too_long}: file name too long"


def test_a_report_name_other_than_json_is_refused_before_anything_is_written(tmp_path):
    predictions = predictions_file(tmp_path)
    for name in ("scores", "scores.txt"):
        line = one_error_line(invoke("eval", "--gold", GOLD, "--predictions", predictions, "--report", tmp_path / name))
        assert line == (
            f"nerft: error: --report {tmp_path / name}: the report is JSON, give a .json path "
            "(report.md, report.html and the charts are written beside it)"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_prepare_into_a_file(tmp_path):
    a_file = tmp_path / "dataset"
    a_file.write_text("kept\n")
    line = one_error_line(invoke("prepare", "--train", SAMPLE / "train.jsonl", "--out", a_file))
    assert line == (
        f"nerft: error: dataset_info.json {a_file / 'dataset_info.json'}: {a_file} is a file, not a folder "
        "(choose another --out folder or --name)"
    )
    assert a_file.read_text() == "kept\n"


def test_only_the_machines_faults_become_one_line():
    assert (
        environment_fault(OSError(errno.ENOSPC, "No space left on device", "/x")) == "/x: no space left on the device"
    )
    assert environment_fault(OSError(errno.ENOSPC, "No space left on device")) == "no space left on the device"
    assert environment_fault(OSError(errno.EBADF, "Bad file descriptor", "/x")) is None  # a bug: its traceback
    assert environment_fault(ValueError("x")) is None


def test_predict_on_a_full_disk_names_its_partial_file_and_keeps_the_rows(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_openai_engine import FakeServer

    data = tmp_path / "dev.jsonl"
    data.write_bytes(GOLD.read_bytes())
    out = tmp_path / "predictions.jsonl"
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up just before the rows are made final
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".partial"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr("os.fsync", fsync)
    with FakeServer() as server:
        line = one_error_line(invoke("predict", "--endpoint", server.url, "--data", data, "--out", out))
        assert line == f"nerft: error: {out}.partial: no space left on the device"
        assert not out.exists() and len((tmp_path / "predictions.jsonl.partial").read_text().splitlines()) == 9
        monkeypatch.setattr("os.fsync", real_fsync)
        result = invoke("predict", "--endpoint", server.url, "--data", data, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 9


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's always-full device")
def test_predict_onto_a_really_full_device_names_its_partial_file(tmp_path):
    """A real full device (ENOSPC at every write): the row's write fails, and closing the file,
    which flushes the same bytes again, fails too; the one line still names the file."""
    from test_openai_engine import FakeServer

    data = tmp_path / "dev.jsonl"
    data.write_bytes(GOLD.read_bytes())
    out = tmp_path / "predictions.jsonl"
    (tmp_path / "predictions.jsonl.partial").symlink_to("/dev/full")
    with FakeServer() as server:
        line = one_error_line(invoke("predict", "--endpoint", server.url, "--data", data, "--out", out))
    assert line == f"nerft: error: {out}.partial: no space left on the device"
    assert not out.exists()
