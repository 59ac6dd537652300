"""Property-based fuzzing of every command that reads a user file: garbled, truncated and wrongly
encoded bytes end in success or in one `nerft: error:` line with exit 1, never a traceback; a failed
`nerft prepare` leaves its output folder (dataset_info.json included) byte for byte as it was.

Examples are bounded (`FUZZ_EXAMPLES`, default 25 per command) so that CI stays fast; set
NERFT_FUZZ_EXAMPLES higher for a longer hunt.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
FUZZ_EXAMPLES = int(os.environ.get("NERFT_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ENCODINGS = ("gbk", "gb18030", "big5", "utf-16", "utf-16-le", "utf-32", "shift_jis", "latin-1")


@st.composite
def garbled(draw, original: bytes) -> bytes:
    """`original` damaged one way: cut short, bytes flipped, inserted or deleted, lines dropped or
    repeated, re-encoded, a BOM or NULs added, or replaced by random bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "lines", "encoding", "bom", "nul", "random"]))
    size = len(original)
    if kind == "truncate":
        return original[: draw(st.integers(0, max(size - 1, 0)))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, size - 1))
            data[position] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "insert":
        position = draw(st.integers(0, size))
        return original[:position] + draw(st.binary(min_size=1, max_size=16)) + original[position:]
    if kind == "delete":
        start = draw(st.integers(0, max(size - 1, 0)))
        return original[:start] + original[start + draw(st.integers(1, 64)) :]
    if kind == "lines":
        lines = original.split(b"\n")
        index = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            del lines[index]
        else:
            lines.insert(index, lines[draw(st.integers(0, len(lines) - 1))][: draw(st.integers(0, 200))])
        return b"\n".join(lines)
    if kind == "encoding":
        return original.decode("utf-8").encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    if kind == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + original
    if kind == "nul":
        position = draw(st.integers(0, size))
        return original[:position] + b"\x00" * draw(st.integers(1, 4)) + original[position:]
    return draw(st.binary(max_size=300))


def invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_clean(result) -> None:
    """Success, or exit 1 whose last stderr line is `nerft: error: ...`; never a traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}\n{result.output[-2000:]}") from result.exception
    assert result.exit_code in (0, 1), result.output[-2000:]
    if result.exit_code == 1:
        last = result.stderr.rstrip().splitlines()[-1] if result.stderr.strip() else ""
        assert last.startswith("nerft: error: "), result.stderr[-2000:]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


TRAIN = (SAMPLE / "train.jsonl").read_bytes()
BIO = (
    "".join(
        f"{char} {tag}\n"
        for char, tag in zip(
            "张三在北京大学读书",
            ["B-name", "I-name", "O", "B-organization", "I-organization", "I-organization", "I-organization", "O", "O"],
        )
    ).encode()
    + b"\n"
    + "".join(f"{char} O\n" for char in "今天天气很好").encode()
)
ARRAY = json.dumps(
    [json.loads(line) for line in TRAIN.decode().splitlines()[:6]], ensure_ascii=False, indent=2
).encode()


@FUZZ
@given(
    st.sampled_from([("train.jsonl", TRAIN), ("train.bio", BIO), ("train.json", ARRAY)]).flatmap(
        lambda seed: st.tuples(st.just(seed[0]), garbled(seed[1]))
    )
)
def test_prepare_with_garbled_input(case):
    name, data = case
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / name).write_bytes(data)
        out = scratch / "out"
        out.mkdir()
        info = {"other_train": {"file_name": "other.json", "formatting": "alpaca"}}
        (out / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
        before = snapshot(out)
        result = invoke("prepare", "--train", scratch / name, "--out", out, "--val-size", "0")
        assert_clean(result)
        if result.exit_code == 1:
            assert snapshot(out) == before  # nothing half-written, dataset_info.json untouched
        else:
            after = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
            assert after["other_train"] == info["other_train"] and "cluener_train" in after


def prediction_lines(gold: Path) -> bytes:
    rows = [json.loads(line) for line in gold.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = [
        "\n".join(f"{label}:{text}" for label, texts in row.get("label", {}).items() for text in texts) or "无"
        for row in rows
    ]
    return "".join(
        json.dumps({"prompt": "...", "predict": answer}, ensure_ascii=False) + "\n" for answer in answers
    ).encode()


GOLD = (SAMPLE / "dev.jsonl").read_bytes()
PREDICTIONS = prediction_lines(SAMPLE / "dev.jsonl")


@FUZZ
@given(st.sampled_from(["gold", "predictions"]), st.data())
def test_eval_with_a_garbled_gold_or_predictions_file(which, data):
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        gold, predictions = scratch / "gold.jsonl", scratch / "predictions.jsonl"
        gold.write_bytes(data.draw(garbled(GOLD)) if which == "gold" else GOLD)
        predictions.write_bytes(data.draw(garbled(PREDICTIONS)) if which == "predictions" else PREDICTIONS)
        report = scratch / "out" / "report.json"
        result = invoke("eval", "--gold", gold, "--predictions", predictions, "--report", report)
        assert_clean(result)
        assert report.is_file() == (result.exit_code == 0)


CONFIG = (ROOT / "conf" / "tiny-cpu.yaml").read_bytes()


@FUZZ
@given(garbled(CONFIG))
def test_train_dry_run_with_a_garbled_config(session_cache, data):
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "garbled.yaml"
        config.write_bytes(data)
        result = invoke("train", config, "--dry-run", "-o", Path(scratch) / "run")
        assert_clean(result)
        assert not (Path(scratch) / "run").exists()  # a dry run writes nothing


MANIFEST = json.dumps(
    {
        "base_model": "nerft:tiny-qwen2",
        "template": "qwen",
        "finetuning_type": "lora",
        "prompt": "compact",
        "labels": ["name", "address", "company"],
        "adapter_dir": ".",
        "quantization_bit": None,
        "merged_model": None,
        "cutoff_len": 256,
        "schema_version": 1,
    },
    indent=2,
).encode()
TRAINER_LOG = b"".join(
    json.dumps({"current_steps": step, "total_steps": 3, "loss": 2.0 / step, "lr": 1e-4, "epoch": step / 3}).encode()
    + b"\n"
    for step in (1, 2, 3)
)
EVAL_REPORT = json.dumps(
    {
        "records": 2,
        "labels": {"name": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}},
        "micro": {"f1": 0.667},
    }
).encode()
RUN_FILES = {"run.json": MANIFEST, "trainer_log.jsonl": TRAINER_LOG, "eval/report.json": EVAL_REPORT}


def run_folder(scratch: Path, broken: str, data: bytes) -> Path:
    run_dir = scratch / "run"
    for name, content in RUN_FILES.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if name == broken else content)
    (run_dir / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "nerft:tiny-qwen2", "r": 8}))
    return run_dir


@FUZZ
@given(st.sampled_from(sorted(RUN_FILES)).flatmap(lambda name: st.tuples(st.just(name), garbled(RUN_FILES[name]))))
def test_report_with_a_garbled_run_folder(session_cache, case):
    broken, data = case
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = run_folder(Path(scratch), broken, data)
        assert_clean(invoke("report", run_dir, "--out", Path(scratch) / "page"))


@FUZZ
@given(garbled(MANIFEST))
def test_predict_and_serve_with_a_garbled_run_json(session_cache, data):
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = run_folder(Path(scratch), "run.json", data)
        assert_clean(invoke("serve", run_dir, "--dry-run"))
        # An endpoint that is not there: the run folder is read, then the request fails cleanly.
        result = invoke(
            "predict",
            "--run",
            run_dir,
            "--endpoint",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--retries",
            "0",
            "--text",
            "张三",
        )
        assert_clean(result)
        assert result.exit_code == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_prepare_names_a_wrongly_encoded_file(tmp_path, encoding):
    data = tmp_path / "train.jsonl"
    data.write_bytes(TRAIN.decode().encode(encoding, errors="replace"))
    result = invoke("prepare", "--train", data, "--out", tmp_path / "out")
    assert_clean(result)
    if encoding not in ("latin-1",):  # latin-1 with "?" for every Chinese character is plain ASCII JSON
        assert result.exit_code == 1 and str(data) in result.stderr


# --- hostile files: shapes built to exhaust memory, the stack or the screen ----------------------


def alias_bomb(levels: int) -> bytes:
    """A "billion laughs" config: each alias level repeats the one before nine times (9**levels
    values from a few hundred bytes)."""
    lines = ["model: {model_name_or_path: x}", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    lines.append(f"train: {{learning_rate: *a{levels}, bogus: *a{levels}}}")
    return "\n".join(lines).encode() + b"\n"


HOSTILE_CONFIGS = {
    "alias bomb, 5 levels": (alias_bomb(5), "expands to more than 100,000 values"),
    "alias bomb, 9 levels": (alias_bomb(9), "expands to more than 100,000 values"),
    "nested 100,000 deep": (b"train: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "YAML nested too deeply"),
    "a NUL on line 2": (b"model:\n  \x00model_name_or_path: x\n", ":2: broken YAML (unacceptable character #x0000"),
    "invalid UTF-8 on line 3": (b"model:\n  model_name_or_path: x\ntrain: {a: \xff}\n", ":3: not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIGS))
def test_train_dry_run_refuses_a_hostile_config_in_one_line(tmp_path, case):
    data, message = HOSTILE_CONFIGS[case]
    config = tmp_path / "hostile.yaml"
    config.write_bytes(data)
    result = invoke("train", config, "--dry-run", "-o", tmp_path / "run")
    assert_clean(result)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"nerft: error: {config}") and message in line


def test_a_megabyte_value_is_quoted_in_a_short_line(tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text('model: {model_name_or_path: x}\ntrain: {learning_rate: "' + "x" * 1_000_000 + '"}\n')
    result = invoke("train", config, "--dry-run", "-o", tmp_path / "run")
    assert_clean(result)
    assert result.exit_code == 1 and max(len(line) for line in result.stderr.splitlines()) < 300


def test_a_config_broken_everywhere_lists_50_problems_then_a_count(tmp_path):
    config = tmp_path / "many.yaml"
    config.write_text("model: {model_name_or_path: x}\ntrain:\n" + "".join(f"  bogus{i}: 1\n" for i in range(300)))
    result = invoke("train", config, "--dry-run", "-o", tmp_path / "run")
    assert_clean(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 52  # 50 problems, "... and 251 more problems", the summary
    assert lines[-2] == "... and 251 more problems"  # 300 unknown keys and no training data
    assert lines[-1] == f"nerft: error: {config}: 301 problems in this config; nothing was run"


DEEP = b"[" * 200_000 + b"]" * 200_000
LONG_NUMBER = b"9" * 5_000
HOSTILE_RECORDS = {
    "nested 200,000 deep": (
        b'{"text": "\xe5\xbc\xa0\xe4\xb8\x89", "label": ' + DEEP + b"}\n",
        ":2: JSON nested too deeply",
    ),
    "a number of 5,000 digits": (
        b'{"text": "\xe5\xbc\xa0\xe4\xb8\x89", "label": {"name": {"x": [[0, ' + LONG_NUMBER + b"]]}}}\n",
        ":2: a number of more than 4,300 digits",
    ),
    "a lone surrogate": (b'{"text": "\\ud800\xe5\xbc\xa0", "label": {}}\n', ":2: error: 'text' holds a lone surrogate"),
    "invalid UTF-8": (b'{"text": "\xe5\xbc\xa0\xff", "label": {}}\n', ":2: not UTF-8 text"),
    "a lone surrogate in its id": (b'{"id": ["\\udfff"], "text": "x", "label": {}}\n', ":2: error: 'id' holds a lone"),
}
FIRST_RECORD = TRAIN.split(b"\n", 1)[0] + b"\n"


@pytest.mark.parametrize("case", sorted(HOSTILE_RECORDS))
def test_prepare_and_eval_name_the_line_of_a_hostile_record(tmp_path, case):
    line, message = HOSTILE_RECORDS[case]
    data = tmp_path / "hostile.jsonl"
    data.write_bytes(FIRST_RECORD + line)  # the hostile record on line 2
    result = invoke("prepare", "--train", data, "--out", tmp_path / "out", "--val-size", "0")
    assert_clean(result)
    assert result.exit_code == 1 and f"{data}{message}" in result.stderr
    assert not (tmp_path / "out").exists()
    result = invoke("eval", "--gold", data, "--predictions", data, "--report", tmp_path / "report.json")
    assert_clean(result)
    assert result.exit_code == 1 and f"{data}:2: " in result.stderr
    assert data.read_bytes() == FIRST_RECORD + line


@pytest.mark.parametrize(
    "line, message",
    [
        (b'{"predict": ' + DEEP + b"}\n", ":2: JSON nested too deeply"),
        (b'{"predict": ' + LONG_NUMBER + b"}\n", ":2: a number of more than 4,300 digits"),
    ],
)
def test_eval_names_the_line_of_a_hostile_prediction(tmp_path, line, message):
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(GOLD)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(PREDICTIONS.split(b"\n", 1)[0] + b"\n" + line)
    result = invoke("eval", "--gold", gold, "--predictions", predictions)
    assert_clean(result)
    assert result.exit_code == 1 and f"nerft: error: {predictions}{message}" in result.stderr


@pytest.mark.parametrize(
    "stdin, message",
    [
        (b"\xe5\xbc\xa0\xff\n", "<stdin>:1: not UTF-8 text"),
        (b'{"text": "\\ud800"}\n', "<stdin>:1: error: 'text' holds a lone surrogate"),
        (b'{"text": ' + DEEP + b"}\n", "<stdin>:1: JSON nested too deeply"),
        (b'{"text": ' + LONG_NUMBER + b"}\n", "<stdin>:1: a number of more than 4,300 digits"),
    ],
)
def test_predict_names_the_line_of_hostile_stdin(stdin, message):
    result = CliRunner().invoke(app, ["predict", "--endpoint", "http://127.0.0.1:9/v1"], input=stdin)
    assert_clean(result)
    assert result.exit_code == 1 and message in result.stderr


def test_predict_reads_stdin_up_to_its_first_bad_line():
    from nerft.inference.predict import records_from_lines

    records = records_from_lines([b"\xe5\xbc\xa0\xe4\xb8\x89\n", b"\n", b"ab\xffc\n"])
    assert next(records).text == "张三"
    with pytest.raises(DataError, match=r"^<stdin>:3: not UTF-8 text"):
        next(records)
    records = records_from_lines(["张三\n", "a\udcffb\n"])  # a byte read with surrogateescape
    next(records)
    with pytest.raises(DataError, match=r"^<stdin>:2: not UTF-8 text"):
        next(records)
