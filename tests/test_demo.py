"""`nerft demo`: the page, served by the real command on 127.0.0.1, driven in headless Chromium."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import chrome  # noqa: F401 (fixture)
from conftest import ROOT

from nerft.serving.demo import highlighted
from nerft.serving.server import free_port


def test_highlighted_shifts_each_line_and_keeps_the_outer_entity_of_a_nest():
    rows = [
        {
            "text": "北京大学",
            "entities": [
                {"label": "organization", "text": "北京大学", "start": 0, "end": 4},
                {"label": "address", "text": "北京", "start": 0, "end": 2},
            ],
        },
        {
            "text": "张三去了北京",
            "entities": [
                {"label": "name", "text": "张三", "start": 0, "end": 2},
                {"label": "address", "text": "北京", "start": 4, "end": 6},
                {"label": "name", "text": "李四", "start": None, "end": None},
            ],
        },
    ]
    assert highlighted(rows) == {
        "text": "北京大学\n张三去了北京",
        "entities": [
            {"entity": "organization", "start": 0, "end": 4},
            {"entity": "name", "start": 5, "end": 7},
            {"entity": "address", "start": 9, "end": 11},
        ],
    }


def test_the_confidence_table_lists_the_least_confident_entity_first():
    from nerft.serving.demo import confidence_table

    rows = [
        {
            "entities": [
                {"label": "name", "text": "甲", "confidence": 0.9},
                {"label": "name", "text": "乙", "confidence": None},
            ]
        },
        {"entities": [{"label": "address", "text": "丙", "confidence": 0.2}]},
    ]
    assert confidence_table(rows) == [[2, "address", "丙", 0.2], [1, "name", "甲", 0.9], [1, "name", "乙", None]]


def rgb(style: str) -> tuple[int, ...]:
    """The red, green and blue of the first colour in an inline style ("background-color: rgb(1, 2, 3)")."""
    import re

    return tuple(int(n) for n in re.findall(r"\d+", style.split("(", 1)[1])[:3])


@pytest.fixture(scope="module")
def sentence_and_entities(learned_run):
    """A training sentence of the learned run and what `nerft predict --engine hf` finds in it."""
    from nerft.data.load import load_records
    from nerft.inference.options import EngineOptions
    from nerft.inference.predict import predict
    from nerft.runfolder import load_run

    rows = []
    predict(
        load_records(ROOT / "data" / "sample" / "train.jsonl")[:8],
        run=load_run(learned_run),
        options=EngineOptions(engine="hf"),
        sink=rows.append,
    )
    for row in rows:
        if row["entities"]:
            return row["text"], row["entities"]
    pytest.skip(
        "the learned run finds no entity in its first training sentences (conf/tiny-cpu.yaml does not learn them)"
    )


@pytest.fixture(scope="module")
def demo_url(learned_run, tmp_path_factory):
    port = free_port()
    env = {
        **os.environ,
        "NERFT_CACHE": str(tmp_path_factory.getbasetemp() / "nerft-cache"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "nerft", "demo", str(learned_run), "--engine", "hf", "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while f"demo of {learned_run} at {url}" not in log.read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nerft demo did not start:\n" + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.slow
def test_the_page_highlights_what_predict_finds_in_a_training_sentence(demo_url, sentence_and_entities, chrome):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sentence, entities = sentence_and_entities
    chrome.get(demo_url)
    box = WebDriverWait(chrome, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#sentences textarea"))
    box.send_keys(sentence)
    chrome.find_element(By.ID, "submit").click()
    spans = WebDriverWait(chrome, 120).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#entities .textspan.hl") or False
    )
    # gradio draws the label as the span's colour, keyed by the legend: read the label back from it
    legend = {
        rgb(item.get_attribute("style")): item.text.strip()
        for item in chrome.find_elements(By.CSS_SELECTOR, "#entities .category-label")
    }
    found = [(span.text.strip(), legend.get(rgb(span.get_attribute("style")))) for span in spans]
    assert found == [(e["text"], e["label"]) for e in sorted(entities, key=lambda e: e["start"])]
    assert all(span.is_displayed() and span.size["width"] > 10 for span in spans)
    rows = WebDriverWait(chrome, 30).until(lambda d: d.find_element(By.ID, "rows").text or False)
    assert entities[0]["text"] in rows and '"start"' in rows and '"confidence"' in rows
    table = chrome.find_element(By.ID, "confidences").text
    assert all(entity["text"] in table for entity in entities)
    shot = Path(os.environ.get("NERFT_SCREENSHOTS", ROOT / "runs")) / "demo.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert chrome.save_screenshot(str(shot))


def test_demo_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from nerft.cli.main import app

    result = CliRunner().invoke(app, ["demo", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("nerft: error: ") and len(result.stderr.strip().splitlines()) <= 2
