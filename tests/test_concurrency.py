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
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from nerft.io import locked\nwith locked(sys.argv[1]):\n print('held', flush=True); time.sleep(30)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
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
