"""The real Label Studio (its own venv, `.venv-labelstudio`, made by scripts/setup.sh), started on
127.0.0.1: nerft's pre-annotated tasks go in through its API, a person's accepted or corrected
annotations come out of its JSON export, and `nerft prepare` reads that export."""

import json
import os
import subprocess
import time

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.data.load import load_records
from nerft.inference.engines import Generation
from nerft.inference.predictions import prediction_row
from nerft.prompts import get_format
from nerft.serving.server import free_port

LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
TOKEN = "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """An httpx client of a fresh Label Studio server, with a user and an API token."""
    httpx = pytest.importorskip("httpx")
    if not LABEL_STUDIO.is_file():
        pytest.skip(f"{LABEL_STUDIO} is absent (bash scripts/setup.sh installs Label Studio)")
    data_dir, port = tmp_path_factory.mktemp("label-studio"), free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    log = open(data_dir / "server.log", "wb")
    server = subprocess.Popen(
        [
            str(LABEL_STUDIO),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir / "data"),
            "--username",
            "nerft@example.com",
            "--password",
            "nerft-test-1",
            "--user-token",
            TOKEN,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {TOKEN}"}, timeout=120)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if client.get("/api/projects").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "Label Studio did not start:\n" + (data_dir / "server.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(1)
        yield client
    finally:
        client.close()
        try:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        except ProcessLookupError:  # a server that died at start-up: its failure is the one to report
            pass
        log.close()


def run(*args):
    result = CliRunner().invoke(app, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def new_project(client, config: str, title: str) -> int:
    response = client.post("/api/projects", json={"title": title, "label_config": config})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def export(client, project: int, path):
    response = client.get(
        f"/api/projects/{project}/export", params={"exportType": "JSON", "download_all_tasks": "true"}
    )
    assert response.status_code == 200, response.text[:500]
    path.write_bytes(response.content)
    return path


def test_pre_annotations_corrected_in_label_studio_come_back_through_nerft_prepare(label_studio, tmp_path, sample_dir):
    gold = load_records(sample_dir / "dev.jsonl")
    compact = get_format("compact")
    # what `nerft predict` writes for a model that answers the gold entities (offsets placed by predict's rule)
    rows = [prediction_row(record, Generation(compact.example(record)["output"], "stop")) for record in gold]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    run("convert", predictions, "--to", "label-studio", "--out", tmp_path / "tasks.json", "--model-version", "tiny")
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    config = (tmp_path / "tasks.label_config.xml").read_text(encoding="utf-8")
    project = new_project(label_studio, config, "nerft pre-annotations")

    imported = label_studio.post(f"/api/projects/{project}/import", json=tasks)
    assert imported.status_code == 201, imported.text
    assert (imported.json()["task_count"], imported.json()["prediction_count"]) == (len(gold), len(gold))
    # before anyone annotates, the export holds predictions only: nerft reads unlabelled sentences
    untouched = load_records(export(label_studio, project, tmp_path / "untouched.json"))
    assert [(r.text, r.labelled) for r in untouched] == [(r.text, False) for r in gold]

    # a person accepts every pre-annotation, and corrects the first task: its first entity gets another label
    listed = label_studio.get("/api/tasks", params={"project": project, "page_size": 1000}).json()["tasks"]
    by_text = {task["data"]["text"]: task["id"] for task in listed}
    corrected = json.loads(json.dumps(tasks[0]["predictions"][0]["result"]))
    corrected[0]["value"]["labels"] = ["scene"]
    for index, task in enumerate(tasks):
        result = corrected if index == 0 else task["predictions"][0]["result"]
        response = label_studio.post(f"/api/tasks/{by_text[task['data']['text']]}/annotations", json={"result": result})
        assert response.status_code == 201, response.text

    exported = export(label_studio, project, tmp_path / "export.json")
    records = load_records(exported)
    first = gold[0].entities[0]
    expected = [
        [(e.start, e.end, "scene" if (i, e) == (0, first) else e.label, e.text) for e in r.entities]
        for i, r in enumerate(gold)
    ]
    assert [r.text for r in records] == [r.text for r in gold]
    assert [[(e.start, e.end, e.label, e.text) for e in r.entities] for r in records] == [sorted(x) for x in expected]

    out = tmp_path / "prepared"
    result = run("prepare", "--train", exported, "--out", out, "--val-size", "0")
    assert "0 errors / 0 warnings" in result.stdout
    prepared = load_records(out / "cluener_train.gold.jsonl")
    assert [[(e.start, e.end, e.label, e.text) for e in r.entities] for r in prepared] == [sorted(x) for x in expected]


def test_cluener_dev_imported_as_annotations_exports_the_same_records(label_studio, tmp_path, cluener_dir):
    gold = load_records(cluener_dir / "dev.jsonl")
    run("convert", cluener_dir / "dev.jsonl", "--to", "label-studio", "--out", tmp_path / "dev.json")
    project = new_project(label_studio, (tmp_path / "dev.label_config.xml").read_text(encoding="utf-8"), "CLUENER dev")
    tasks = json.loads((tmp_path / "dev.json").read_text(encoding="utf-8"))
    imported = label_studio.post(f"/api/projects/{project}/import", json=tasks)
    assert imported.status_code == 201 and imported.json()["annotation_count"] == len(gold) == 1343
    exported = load_records(export(label_studio, project, tmp_path / "export.json"))
    # Label Studio's export order is its own: compare as a multiset of (text, entities)
    assert sorted((r.text, r.entities) for r in exported) == sorted((r.text, r.entities) for r in gold)


def test_select_round_trip_the_least_confident_sentences_through_label_studio(
    label_studio, tmp_path, learned_run, sample_dir
):
    # predict -> select: the learned run answers the unlabelled test sentences; the 3 least confident become tasks
    unlabelled = sample_dir / "test.jsonl"
    out = tmp_path / "tasks.json"
    result = run("select", "--run", learned_run, "--data", unlabelled, "-n", "3", "--out", out, "--engine", "hf")
    assert "least confident of" in result.stdout
    tasks = json.loads(out.read_text(encoding="utf-8"))
    scores = [task["predictions"][0]["score"] for task in tasks]
    assert len(tasks) == 3 and scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    every = load_records(unlabelled)
    assert {task["data"]["text"] for task in tasks} <= {record.text for record in every}

    # -> Label Studio: the tasks and their scored pre-annotations go in
    project = new_project(label_studio, (tmp_path / "tasks.label_config.xml").read_text(encoding="utf-8"), "select")
    imported = label_studio.post(f"/api/projects/{project}/import", json=tasks)
    assert imported.status_code == 201, imported.text
    assert (imported.json()["task_count"], imported.json()["prediction_count"]) == (3, 3)
    listed = label_studio.get("/api/tasks", params={"project": project, "page_size": 1000}).json()["tasks"]
    by_text = {task["data"]["text"]: task["id"] for task in listed}
    stored = label_studio.get("/api/predictions", params={"task": by_text[tasks[0]["data"]["text"]]}).json()
    assert stored and stored[0]["score"] == pytest.approx(scores[0])

    # -> a person accepts the pre-annotations of each task -> export -> nerft prepare
    for task in tasks:
        response = label_studio.post(
            f"/api/tasks/{by_text[task['data']['text']]}/annotations", json={"result": task["predictions"][0]["result"]}
        )
        assert response.status_code == 201, response.text
    exported = export(label_studio, project, tmp_path / "export.json")
    prepared_dir = tmp_path / "prepared"
    run("prepare", "--train", exported, "--out", prepared_dir, "--val-size", "0")
    prepared = load_records(prepared_dir / "cluener_train.gold.jsonl")
    expected = {
        task["data"]["text"]: sorted(
            (r["value"]["start"], r["value"]["end"] - 1, r["value"]["labels"][0], r["value"]["text"])
            for r in task["predictions"][0]["result"]
        )
        for task in tasks
    }
    assert {r.text: sorted((e.start, e.end, e.label, e.text) for e in r.entities) for r in prepared} == expected
