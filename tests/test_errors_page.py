"""errors.html from a real `nerft eval`, opened in a real headless Chromium."""

import json
import os
from pathlib import Path

import pytest
from browser import chrome  # noqa: F401 (fixture)
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.reporting.errors_page import highlight, label_colours

GOLD = [
    {
        "text": "浙商银行企业信贷部叶老桂博士则从另一个角度进行了解读。",
        "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[9, 11]]}},
    },
    {"text": "京东与沃尔玛合作开店。", "label": {"company": {"京东": [[0, 1]], "沃尔玛": [[3, 5]]}}},
    {"text": "他在上海读了《围城》。", "label": {"address": {"上海": [[2, 3]]}, "book": {"围城": [[7, 8]]}}},
    {"text": "今天天气很好。", "label": {}},
    {"text": "张三在北京工作。", "label": {"name": {"张三": [[0, 1]]}, "address": {"北京": [[3, 4]]}}},
]
ANSWERS = [
    "organization:浙商银行\nname:老桂",  # wrong label, wrong boundary
    "company:京东\naddress:北京",  # right, spurious (not in the sentence), 沃尔玛 missed
    "address:上海\nmovie:围城",  # right, wrong label
    "无",  # right
    "name:张三\naddress:北京",  # right
]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    gold, predictions = folder / "gold.jsonl", folder / "predictions.jsonl"
    gold.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in GOLD), encoding="utf-8")
    predictions.write_text(
        "".join(json.dumps({"predict": a}, ensure_ascii=False) + "\n" for a in ANSWERS), encoding="utf-8"
    )
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--gold",
            str(gold),
            "--predictions",
            str(predictions),
            "--report",
            str(folder / "out" / "report.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_highlight_escapes_text_and_marks_each_span():
    colours = label_colours(["name", "address"])
    assert colours == {"address": "#ffd8a8", "name": "#b2f2bb"}
    marked = highlight(
        "<张三>在北京", [(1, 2, "name"), (5, 6, "address")], colours, wrong=lambda pair: pair[0] == "address"
    )
    assert marked == (
        '&lt;<mark class="ent" data-label="name" style="background:#b2f2bb" title="name">张三<sub>name</sub></mark>&gt;在'
        '<mark class="ent wrong" data-label="address" style="background:#ffd8a8" title="address">北京<sub>address</sub></mark>'
    )


def test_the_page_lists_only_sentences_with_mistakes_and_needs_no_network(eval_dir):
    page = (eval_dir / "errors.html").read_text(encoding="utf-8")
    assert page.count('<section class="sentence"') == 3
    assert (
        "3 of 5 sentences have a mistake: 1 missed, 1 spurious, 2 wrong label, 1 wrong boundary; 0 unparseable answers."
        in page
    )
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=" not in page


def test_chromium_shows_the_highlights_and_filters_by_kind_and_label(eval_dir, chrome):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    chrome.get((eval_dir / "errors.html").as_uri())
    cards = chrome.find_elements(By.CSS_SELECTOR, "section.sentence")
    assert [card.find_element(By.TAG_NAME, "h2").text for card in cards] == ["line 1", "line 2", "line 3"]
    gold_marks = [
        (m.get_attribute("data-label"), m.text.split("\n")[0])
        for m in cards[0].find_elements(By.CSS_SELECTOR, ".gold mark")
    ]
    assert gold_marks == [("company", "浙商银行company"), ("name", "叶老桂name")] or gold_marks == [
        ("company", "浙商银行"),
        ("name", "叶老桂"),
    ]
    predicted = cards[0].find_elements(By.CSS_SELECTOR, ".predicted mark")
    assert [m.get_attribute("data-label") for m in predicted] == ["organization", "name"]
    assert all("wrong" in m.get_attribute("class") for m in predicted)
    # the highlight is drawn: a coloured background and a red outline, with a size on screen
    style = chrome.execute_script(
        "var s = getComputedStyle(arguments[0]); return [s.backgroundColor, s.outlineColor, s.outlineStyle];",
        predicted[0],
    )
    assert style[0] != "rgba(0, 0, 0, 0)" and style[2] == "solid"
    assert predicted[0].size["width"] > 20 and predicted[0].is_displayed()
    kinds = [li.get_attribute("data-kind") for li in cards[0].find_elements(By.CSS_SELECTOR, "li.mistake")]
    assert kinds == ["wrong label", "wrong boundary"]
    Select(chrome.find_element(By.ID, "kind")).select_by_value("missed")
    assert [card.is_displayed() for card in cards] == [False, True, False]
    Select(chrome.find_element(By.ID, "kind")).select_by_value("")
    Select(chrome.find_element(By.ID, "label")).select_by_value("movie")
    assert [card.is_displayed() for card in cards] == [False, False, True]
    assert chrome.find_element(By.ID, "shown").text == "1 of 3 sentences shown"
    Select(chrome.find_element(By.ID, "label")).select_by_value("")
    shot = Path(os.environ.get("NERFT_SCREENSHOTS", eval_dir)) / "errors_page.png"
    chrome.set_window_size(1000, 860)
    assert chrome.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
