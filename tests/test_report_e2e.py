"""Reports on a real run: the session's `nerft train tiny-cpu` (conftest's `learned_run`: the real
llamafactory-cli, 500 steps on the CPU), then the real `nerft eval --report` and `nerft report` on
a copy of its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_report import BAR_BLUE, has_colour, png_size
from typer.testing import CliRunner

from nerft.cli.main import app

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture
def trained_run(learned_run, tmp_path) -> Path:
    """A copy of the session's trained run (the learned run itself is never written into)."""
    return Path(shutil.copytree(learned_run, tmp_path / "tiny", ignore=shutil.ignore_patterns("checkpoint-*")))


def test_eval_and_report_on_a_real_tiny_run(trained_run, tmp_path):
    from nerft.data.load import load_records
    from nerft.prompts import get_format

    # The tiny random model cannot answer, so the answers are the gold ones in the compact format:
    # what is real here is the run folder, the eval code and the report code.
    records = load_records(SAMPLE / "dev.jsonl")
    compact = get_format("compact")
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        "".join(
            json.dumps({"predict": compact.example(record)["output"]}, ensure_ascii=False) + "\n" for record in records
        )
    )
    report = trained_run / "eval" / "report.json"
    result = CliRunner().invoke(
        app, ["eval", "--gold", str(SAMPLE / "dev.jsonl"), "--predictions", str(predictions), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert (trained_run / "eval" / "report.md").is_file() and has_colour(
        trained_run / "eval" / "f1_by_label.png", BAR_BLUE
    )

    result = CliRunner().invoke(app, ["report", str(trained_run)])
    assert result.exit_code == 0, result.output
    out = trained_run / "report"
    assert result.stdout.split() == [
        str(out / name) for name in ("report.md", "report.html", "loss.png", "f1_by_label.png", "confusion.png")
    ]
    page = (out / "report.md").read_text(encoding="utf-8")
    log = [json.loads(line) for line in (trained_run / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row for row in log if "loss" in row]
    assert len(losses) == 20  # tiny-cpu: logging_steps 25, max_steps 500
    assert f"500 of 500 steps, loss {losses[0]['loss']:.4f} at step 25 to {losses[-1]['loss']:.4f} at step 500" in page
    assert "| model_name_or_path |" in page and "| max_steps | 500 |" in page
    assert "| name | 1.0000 | 1.0000 | 1.0000 |" in page  # gold answers score 1 on every label
    assert png_size(out / "loss.png") == (900, 504) and has_colour(out / "loss.png", BAR_BLUE, at_least=100)
    assert (out / "report.html").read_text(encoding="utf-8").count("data:image/png;base64,") == 3
    assert "[Every sentence with a mistake, highlighted: errors.html](../eval/errors.html)" in page
