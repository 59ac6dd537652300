"""Races between real nerft processes: shared files keep every writer's entries, builds and
replacements never collide or leave the target missing."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from nerft.io import locked, replace_dir, staging_dir, update_json

PROCESSES = 6
TRIALS = 10


def nerft_process(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "nerft", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.mark.slow
def test_six_concurrent_prepares_into_one_folder_keep_every_entry(sample_dir, tmp_path):
    """Six `nerft prepare` processes register different datasets into one folder at once, TRIALS
    times (without the lock, entries were lost in 5 of 8 trials)."""
    lost = []
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        processes = [
            nerft_process(
                "prepare",
                "--train",
                sample_dir / "train.jsonl",
                "--out",
                out,
                "--name",
                f"set{k}",
                "--val-size",
                "0.25",
                cwd=tmp_path,
            )
            for k in range(PROCESSES)
        ]
        for process in processes:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr.decode()
        info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
        expected = {f"set{k}_{split}" for k in range(PROCESSES) for split in ("train", "dev")}
        if set(info) != expected:
            lost.append((trial, sorted(expected - set(info))))
        for k in range(PROCESSES):
            assert (
                json.loads((out / f"set{k}_meta.json").read_text(encoding="utf-8"))["datasets"]["train"]
                == f"set{k}_train"
            )
    assert lost == [], f"entries lost in {len(lost)} of {TRIALS} trials: {lost}"


def test_update_json_under_the_lock_loses_no_update_between_threads(tmp_path):
    path = tmp_path / "shared.json"

    def read(p):
        return json.loads(p.read_text()) if p.exists() else {}

    def add(key):
        def change(current):
            time.sleep(0.002)  # widen the window between read and write
            return {**current, key: True}

        update_json(path, change, read=read)

    threads = [threading.Thread(target=add, args=(f"k{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(read(path)) == sorted(f"k{i}" for i in range(20))


def test_a_held_lock_times_out_with_one_clear_error(tmp_path):
    from nerft.errors import NerftError

    path = tmp_path / "dataset_info.json"
    holder = hold(path, "locked")
    try:
        with pytest.raises(NerftError, match=r"dataset_info.json: still locked by another nerft process after 0 s"):
            with locked(path, timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with locked(path, timeout=5):  # the kernel released the killed holder's lock
        pass


def test_staging_folders_are_unique(tmp_path):
    target = tmp_path / "model"
    first, second = staging_dir(target), staging_dir(target)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith(".model.") and first.name.endswith(".partial")


def test_replace_dir_never_leaves_the_target_missing(tmp_path):
    """A reader polling the target while it is replaced 200 times always finds a complete folder."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("0")
    seen, missing = [], []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append((target / "config.json").read_text())
            except FileNotFoundError:
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(1, 201):
            staging = staging_dir(target)
            (staging / "config.json").write_text(str(version))
            replace_dir(staging, target)
    finally:
        stop.set()
        thread.join()
    assert missing == []
    assert (target / "config.json").read_text() == "200"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old folder left
    assert len(seen) > 0


def test_replace_dir_replaces_a_file_and_fills_an_empty_place(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    staging = staging_dir(target)
    (staging / "x").write_text("1")
    replace_dir(staging, target)
    assert (target / "x").read_text() == "1"
    fresh = staging_dir(tmp_path / "new")
    replace_dir(fresh, tmp_path / "new")
    assert (tmp_path / "new").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]


@pytest.mark.slow
def test_parallel_first_builds_of_the_tiny_model_do_not_collide(tmp_path):
    """Two processes build the tiny model into one folder at once (they shared one `.partial`).
    Most of each build is importing torch, so whether the old code crashed depended on timing."""
    code = "import sys; from nerft.models.tiny import build_tiny_qwen2; build_tiny_qwen2(sys.argv[1], corpus=['张三在北京大学读书。'], vocab_size=300)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "tiny")], stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()[-2000:]
    assert (tmp_path / "tiny" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_two_trainings_sharing_a_data_folder_keep_their_own_files(sample_dir, tmp_path, monkeypatch, session_cache):
    """Two runs with different data (here: prompt formats) prepared into one data.dataset_dir each
    train on their own files; with one name (`cluener_train.json`) the second overwrote the first's."""
    import yaml
    from conftest import FakeLauncher
    from typer.testing import CliRunner

    from nerft.cli.main import app
    from nerft.training import kernels

    monkeypatch.setattr(kernels, "detect_machine", lambda: kernels.Machine(cuda=False))
    monkeypatch.setattr("nerft.process.run_program", FakeLauncher())
    shared = tmp_path / "shared-data"
    runs = {}
    for prompt in ("compact", "seed"):
        run_dir = tmp_path / f"run-{prompt}"
        result = CliRunner().invoke(
            app,
            [
                "train",
                "tiny-cpu",
                "-o",
                str(run_dir),
                "--set",
                f"data.dataset_dir={shared}",
                "--set",
                f"data.prompt={prompt}",
            ],
        )
        assert result.exit_code == 0, result.output
        runs[prompt] = yaml.safe_load((run_dir / "llamafactory_train.yaml").read_text(encoding="utf-8"))
    assert runs["compact"]["dataset"] != runs["seed"]["dataset"]
    info = json.loads((shared / "dataset_info.json").read_text(encoding="utf-8"))
    for prompt, args in runs.items():
        assert args["dataset_dir"] == str(shared)
        examples = json.loads((shared / info[args["dataset"]]["file_name"]).read_text(encoding="utf-8"))
        assert (examples[0]["output"].startswith("[")) == (prompt == "seed")  # seed answers JSON, compact lines


# ---- one writer per output file ------------------------------------------------------------


def hold(path, lock: str = "sole_writer"):
    """A process holding `nerft.io.<lock>(path)` until killed; returns it once it holds the lock."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; from nerft.io import {lock}\nwith {lock}(sys.argv[1]):\n print('held', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout.readline().strip() == b"held"
    return holder


def test_a_second_writer_is_refused_at_once_naming_the_lock_and_the_process(tmp_path):
    from nerft.errors import NerftError
    from nerft.io import sole_writer

    out = tmp_path / "pred.jsonl"
    holder = hold(out)
    try:
        start = time.monotonic()
        with pytest.raises(NerftError) as info:
            with sole_writer(out):
                pass
        assert time.monotonic() - start < 1.0  # refused, not waited for
        assert str(info.value) == (
            f"{out}: process {holder.pid} is writing it (it holds {tmp_path / '.pred.jsonl.lock'}) "
            "(wait for it to finish, or write to another path)"
        )
    finally:
        holder.kill()
        holder.wait()
    with sole_writer(out), sole_writer(out):  # the killed holder's lock is free; re-entrant here
        assert (tmp_path / ".pred.jsonl.lock").read_text() == f"{os.getpid()}\n"
    assert list(tmp_path.iterdir()) == []  # the lock file goes with its last holder


def test_written_together_puts_every_file_in_place_or_none(tmp_path):
    from nerft.io import written_together

    report = tmp_path / "report.json"
    report.write_text("old")
    (tmp_path / "report.md").write_text("old")
    with pytest.raises(RuntimeError):
        with written_together(report) as stage:
            stage(report).write_text("new")
            stage(tmp_path / "report.md").write_text("new")
            raise RuntimeError("the pages failed")
    assert [(p.name, p.read_text()) for p in sorted(tmp_path.iterdir())] == [
        ("report.json", "old"),
        ("report.md", "old"),
    ]
    (tmp_path / "chart.png").mkdir()  # a rename that would fail is found before any is made
    with pytest.raises(Exception, match="chart.png: is a folder, not a file"):
        with written_together(report) as stage:
            stage(report).write_text("new")
            stage(tmp_path / "chart.png").write_text("new")
    assert report.read_text() == "old"
    (tmp_path / "chart.png").rmdir()
    with written_together(report) as stage:
        stage(report).write_text("new")
        stage(tmp_path / "report.md").write_text("new")
        stage(tmp_path / "chart.png").write_text("new")  # a file the writer adds belongs too
    assert [(p.name, p.read_text()) for p in sorted(tmp_path.iterdir())] == [
        ("chart.png", "new"),
        ("report.json", "new"),
        ("report.md", "new"),
    ]


def test_predict_into_a_file_another_process_writes_is_refused_before_any_request(tmp_path):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "张三在北京"}\n', encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    holder = hold(out)
    try:
        result = CliRunner().invoke(
            app, ["predict", "--endpoint", "http://127.0.0.1:9/v1", "--data", str(data), "--out", str(out)]
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"nerft: error: {out}: process {holder.pid} is writing it")
    assert len(result.stderr.splitlines()) == 1


CONCURRENT_TRIALS = int(os.environ.get("NERFT_CONCURRENT_TRIALS", "5"))  # 20 for the record


def run_together(argvs, cwd):
    processes = [nerft_process(*argv, cwd=cwd) for argv in argvs]
    outputs = [process.communicate(timeout=300) for process in processes]
    return [(process.returncode, out.decode(), err.decode()) for process, (out, err) in zip(processes, outputs)]


def assert_one_line_refusal(code, stderr, path):
    assert code == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(f"nerft: error: {path}: process ") and len(stderr.splitlines()) == 1, stderr


@pytest.mark.slow
def test_two_predicts_into_one_file_never_mix_their_rows(tmp_path):
    """Two `nerft predict --out F` at once: F ended with every row twice and one run died with a
    traceback. Now one writes, the other is refused in one line (or runs after the first)."""
    from test_openai_engine import FakeServer

    texts = [f"张三在北京第{i}次" for i in range(30)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    with FakeServer(delay=lambda text: 0.02) as server:
        for trial in range(CONCURRENT_TRIALS):
            out = tmp_path / f"pred{trial}.jsonl"
            argv = ["predict", "--endpoint", server.url, "--concurrency", "1", "--data", data, "--out", out]
            results = run_together([argv, argv], tmp_path)
            for code, _, stderr in results:
                if code != 0:
                    assert_one_line_refusal(code, stderr, out)
            assert any(code == 0 for code, _, _ in results)
            rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            assert [row["text"] for row in rows] == texts
            assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".pred{trial}")) == []


@pytest.mark.slow
def test_two_evals_into_one_report_never_disagree(tmp_path):
    """Two `nerft eval --report R` at once, one scoring perfect answers, one wrong ones: report.json
    and report.md said micro F1 1.0 and 0.0. Now the files are one run's."""
    gold = tmp_path / "gold.jsonl"
    records = [{"text": f"张三在北京第{i}次", "label": {"name": {"张三": [[0, 1]]}}} for i in range(20)]
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    answers = {"right": "name:张三", "wrong": "name:北京"}
    for name, answer in answers.items():
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": r["text"], "predict": answer}, ensure_ascii=False) + "\n" for r in records),
            encoding="utf-8",
        )
    for trial in range(CONCURRENT_TRIALS):
        report = tmp_path / f"r{trial}" / "report.json"
        argvs = [
            ["eval", "--gold", gold, "--predictions", tmp_path / f"{n}.jsonl", "--report", report] for n in answers
        ]
        results = run_together(argvs, tmp_path)
        for code, _, stderr in results:
            if code != 0:
                assert_one_line_refusal(code, stderr, report)
        f1 = json.loads(report.read_text(encoding="utf-8"))["micro"]["f1"]
        markdown = (report.parent / "report.md").read_text(encoding="utf-8")
        assert f"Micro F1 {f1:.4f} " in markdown, markdown
        assert sorted(p.name for p in report.parent.iterdir() if p.name.startswith(".")) == []
