"""SIGKILL at random points: real `nerft prepare` and `nerft predict` processes are killed while
they work. No output is ever half-written, dataset_info.json stays valid with every earlier entry,
and predict resumes where it was killed."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from test_openai_engine import FakeServer

KILLS = 8
ROOT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def start_nerft(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "nerft", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ROOT_ENV,
    )


def kill_after(process, seconds):
    """SIGKILL `process` after `seconds` (unless it ended); True when it was killed."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
    return False


def visible(folder):
    """The files a reader would use: not nerft's temporary `.NAME.*.tmp` files, not the lock."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def check_prepared_folder(out, expected_other):
    """Every visible file is complete; dataset_info.json keeps the earlier entry and names only
    files that are there and complete."""
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["other_train"] == expected_other
    for name in visible(out):
        text = (out / name).read_text(encoding="utf-8")
        if name.endswith(".gold.jsonl"):
            assert text == "" or text.endswith("\n")
            for line in text.splitlines():
                json.loads(line)
        else:
            json.loads(text)  # alpaca arrays, meta, dataset_info: whole JSON documents
    for entry, spec in info.items():
        if entry != "other_train":
            examples = json.loads((out / spec["file_name"]).read_text(encoding="utf-8"))
            assert isinstance(examples, list) and examples


@pytest.fixture(scope="module")
def big_train(tmp_path_factory, sample_dir):
    """The sample's records repeated to 20,000 lines: a few seconds of `nerft prepare` to kill."""
    lines = (sample_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("kill-data") / "train.jsonl"
    path.write_text("".join(lines[i % len(lines)] + "\n" for i in range(20000)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_prepare_killed_at_random_points_never_half_writes(big_train, tmp_path):
    other = {"file_name": "other.json", "formatting": "alpaca"}
    durations = []  # the faster of two runs: a run slowed by a busy machine would put kills past the end
    for attempt in range(2):
        started = time.perf_counter()
        full = start_nerft("prepare", "--train", big_train, "--out", tmp_path / f"timing{attempt}", cwd=tmp_path)
        assert full.wait(timeout=300) == 0, full.stderr.read().decode()
        durations.append(time.perf_counter() - started)
    duration = min(durations)
    rng = random.Random(11)
    killed = 0
    phases = []  # per kill: True once registered, else how many visible files it left
    for trial in range(KILLS):
        out = tmp_path / f"out{trial}"
        out.mkdir()
        (out / "dataset_info.json").write_text(json.dumps({"other_train": other}), encoding="utf-8")
        process = start_nerft("prepare", "--train", big_train, "--out", out, "--name", "big", cwd=tmp_path)
        # Spread over the whole run (start-up, validation, writing), and every other kill in its
        # last stretch, where the files are renamed into place and registered.
        late = trial % 2 == 1
        killed += kill_after(
            process, rng.uniform(duration * 0.85, duration * 1.02) if late else rng.uniform(0.3, duration * 0.8)
        )
        check_prepared_folder(out, other)
        phases.append(len(json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))) > 1 or len(visible(out)))
        again = start_nerft("prepare", "--train", big_train, "--out", out, "--name", "big", cwd=tmp_path)
        assert again.wait(timeout=300) == 0, again.stderr.read().decode()
        check_prepared_folder(out, other)
        info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
        assert set(info) == {"other_train", "big_train", "big_dev"}
        assert len(json.loads((out / "big_train.json").read_text(encoding="utf-8"))) == 18000
    print(f"prepare: {duration:.2f} s a run; {killed} of {KILLS} killed; left behind: {phases}")
    assert killed >= KILLS // 2  # most runs were really killed, not finished


def sentences(count):
    return [f"第{index}位客人张三{index}在北京的第{index}家店吃饭。" for index in range(count)]


@pytest.mark.slow
def test_predict_killed_at_random_points_resumes_without_loss(tmp_path):
    texts = sentences(150)
    data = tmp_path / "sentences.jsonl"
    data.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts), encoding="utf-8")
    rng = random.Random(5)
    with FakeServer(delay=lambda text: 0.03) as server:  # about 5 s of answers to kill
        args = ["predict", "--endpoint", server.url, "--data", data, "--concurrency", "1", "--retries", "0"]
        for trial in range(KILLS // 2):
            out = tmp_path / f"predictions{trial}.jsonl"
            kept = []
            for _ in range(2):  # killed twice, then left to finish
                process = start_nerft(*args, "--out", out, cwd=tmp_path)
                kill_after(process, rng.uniform(0.3, 3.0))
                partial = out.with_name(out.name + ".partial")
                if out.exists():  # finished before the kill: complete
                    break
                assert not out.exists()
                if partial.exists():
                    lines = partial.read_bytes().split(b"\n")
                    complete = [json.loads(line) for line in lines[:-1]]  # all but a cut last line parse
                    assert [row["text"] for row in complete] == texts[: len(complete)]
                    kept.append(len(complete))
            final = start_nerft(*args, "--out", out, "--json", cwd=tmp_path)
            stdout, stderr = final.communicate(timeout=300)
            assert final.returncode == 0, stderr.decode()
            counts = json.loads(stdout)
            rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            assert [row["text"] for row in rows] == texts  # every sentence once, in order
            assert not out.with_name(out.name + ".partial").exists()
            if kept and kept[-1] > 0:
                assert counts["resumed"] >= kept[-1]  # what was kept is not predicted again
            print(f"predict trial {trial}: rows kept after each kill {kept}, resumed {counts['resumed']}")
