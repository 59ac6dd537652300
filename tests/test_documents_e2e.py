"""A 3,000-character document through `nerft predict` and `nerft eval` with the hf engine on the
learned quick-start run: one row, entities that index the document exactly, and (nearly) every
entity that predicting its sentences one by one finds. Then a folder of .txt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rows import assert_same_rows, rows_of
from typer.testing import CliRunner

from nerft.cli.main import app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def sample_records(split: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def build_document(sentences: list[str], copies: int) -> tuple[str, list[tuple[str, int]]]:
    """The sentences, `copies` times over, four to a line (each ends with "。"): the document and
    (sentence, where it starts) for every sentence in it."""
    lines, placed, at = [], [], 0
    for _ in range(copies):
        for first in range(0, len(sentences), 4):
            line = sentences[first : first + 4]
            for sentence in line:
                placed.append((sentence, at))
                at += len(sentence)
            lines.append("".join(line))
            at += 1  # the newline
    return "\n".join(lines), placed


def run_cli(*args) -> None:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def sentence_rows(learned_run, tmp_path_factory) -> dict[str, dict]:
    """`nerft predict`'s row of each sample sentence (train and dev) alone, by its text."""
    folder = tmp_path_factory.mktemp("sentences")
    records = [{"text": record["text"]} for split in ("train", "dev") for record in sample_records(split)]
    (folder / "sentences.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    run_cli(
        "predict",
        "--run",
        learned_run,
        "--data",
        folder / "sentences.jsonl",
        "--engine",
        "hf",
        "--out",
        folder / "rows.jsonl",
    )
    return {row["text"]: row for row in rows_of(folder / "rows.jsonl")}


def test_a_long_document_gives_one_row_whose_entities_index_it_and_match_its_sentences(
    learned_run, sentence_rows, tmp_path, one_thread
):
    sentences = [record["text"] for record in sample_records("train")] * 4 + [r["text"] for r in sample_records("dev")]
    document, placed = build_document(sentences, 1)
    assert 2900 <= len(document) <= 3100
    (tmp_path / "doc.jsonl").write_text(json.dumps({"id": "news-1", "text": document}, ensure_ascii=False) + "\n")
    run_cli(
        "predict",
        "--run",
        learned_run,
        "--data",
        tmp_path / "doc.jsonl",
        "--engine",
        "hf",
        "--out",
        tmp_path / "out.jsonl",
    )

    [row] = rows_of(tmp_path / "out.jsonl")
    assert row["id"] == "news-1" and row["text"] == document
    assert row["entities"]
    for entity in row["entities"]:
        assert document[entity["start"] : entity["end"]] == entity["text"]
        assert entity["confidence"] is not None  # the pieces' confidences are kept
    found = {(e["label"], e["start"], e["end"]) for e in row["entities"]}
    one_by_one = {
        (e["label"], at + e["start"], at + e["end"])
        for sentence, at in placed
        for e in sentence_rows[sentence]["entities"]
    }
    assert len(one_by_one) >= 250  # the run has learned its training sentences: 69 entities a copy
    assert len(found & one_by_one) >= 0.95 * len(one_by_one), (len(found & one_by_one), len(one_by_one))


def test_eval_scores_a_long_gold_document(learned_run, tmp_path, one_thread):
    records = sample_records("train") * 4
    document, placed = build_document([record["text"] for record in records], 1)
    label: dict = {}
    for record, (_, at) in zip(records, placed):
        for kind, entities in record["label"].items():
            for text, spans in entities.items():
                label.setdefault(kind, {}).setdefault(text, []).extend([[at + s, at + e] for s, e in spans])
    gold = tmp_path / "doc_gold.jsonl"
    gold.write_text(json.dumps({"text": document, "label": label}, ensure_ascii=False) + "\n")
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--run",
            str(learned_run),
            "--gold",
            str(gold),
            "--engine",
            "hf",
            "--out-dir",
            str(tmp_path / "e"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["prediction"]["records"] == 1
    assert report["micro"]["f1"] >= 0.95, report["micro"]


def test_a_folder_of_text_files_gives_a_row_per_file_and_short_ones_as_today(
    learned_run, sentence_rows, tmp_path, one_thread
):
    sentences = [record["text"] for record in sample_records("train")]
    long_text, _ = build_document(sentences[:12], 1)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a-long.txt").write_text(long_text + "\n", encoding="utf-8")
    (folder / "b-short.txt").write_text(sentences[3], encoding="utf-8")
    run_cli("predict", "--run", learned_run, "--data", folder, "--engine", "hf", "--out", tmp_path / "out.jsonl")

    long_row, short_row = rows_of(tmp_path / "out.jsonl")
    assert (long_row["id"], long_row["text"]) == ("a-long.txt", long_text + "\n")
    assert long_row["entities"]
    for entity in long_row["entities"]:
        assert long_text[entity["start"] : entity["end"]] == entity["text"]
    assert short_row["id"] == "b-short.txt"
    assert_same_rows([{k: v for k, v in short_row.items() if k != "id"}], [sentence_rows[sentences[3]]])
