"""The scoring rules on the real CLUENER dev set: a realistic messy predictions file, recounted
independently. The per-label table and macro F1 cover the 10 CLUENER labels; invented labels and
prose around JSON answers are false positives in micro and never rows of their own."""

import json
import random
from collections import defaultdict

import pytest
from typer.testing import CliRunner

from nerft.cli.main import app
from nerft.prompts import CLUENER_LABELS

INVENTED = ("公司名", "人名", "地点")


def messy_answers(gold_rows: list[dict], seed: int = 0) -> list[str]:
    """What an under-trained model answers: most entities right, some missed, some under a wrong or
    invented label, empty answers wrapped in prose, Qwen3 think blocks, a few unreadable answers."""
    rng = random.Random(seed)
    answers = []
    for row in gold_rows:
        mentions = [(label, text) for label, texts in row["label"].items() for text in texts]
        kept = [m for m in mentions if rng.random() > 0.25]
        if kept and rng.random() < 0.15:
            label, text = kept.pop()
            kept.append((rng.choice(INVENTED), text))
        if kept and rng.random() < 0.1:
            label, text = kept.pop()
            kept.append((rng.choice([other for other in CLUENER_LABELS if other != label]), text))
        roll = rng.random()
        if not kept:
            answers.append(rng.choice(["实体如下：[]", "无", "<think>\n\n</think>\n\n无", "结果：[]"]))
        elif roll < 0.05:
            answers.append("抱歉，我无法回答。")
        elif roll < 0.35:
            rendered = json.dumps([{"label": name, "text": t} for name, t in kept], ensure_ascii=False)
            answers.append(
                rng.choice([f"实体如下：{rendered}", f"```json\n{rendered}\n```", f"<think>\n\n</think>\n\n{rendered}"])
            )
        else:
            answers.append("\n".join(f"{name}:{t}" for name, t in kept))
    return answers


def recount(gold_rows, answers_mentions, labels):
    """Sets per sentence, plain formulas, macro over `labels` (an independent count)."""
    tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
    for row, predicted in zip(gold_rows, answers_mentions):
        gold = {(label, text) for label, texts in row["label"].items() for text in texts}
        predicted = set(predicted)
        for label, _ in gold & predicted:
            tp[label] += 1
        for label, _ in predicted - gold:
            fp[label] += 1
        for label, _ in gold - predicted:
            fn[label] += 1

    def f1(label):
        p = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
        r = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 0.0
        return 2 * p * r / (p + r) if p + r else 0.0

    micro_tp, micro_fp, micro_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    p, r = micro_tp / (micro_tp + micro_fp), micro_tp / (micro_tp + micro_fn)
    return sum(f1(label) for label in labels) / len(labels), 2 * p * r / (p + r), dict(fp)


@pytest.fixture(scope="module")
def dev_files(cluener_dir, tmp_path_factory):
    gold_rows = [json.loads(line) for line in (cluener_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = messy_answers(gold_rows)
    folder = tmp_path_factory.mktemp("dev")
    predictions = folder / "predictions.jsonl"
    predictions.write_text(
        "".join(json.dumps({"predict": a}, ensure_ascii=False) + "\n" for a in answers), encoding="utf-8"
    )
    return gold_rows, answers, cluener_dir / "dev.jsonl", predictions, folder


def intended_mentions(answer: str) -> list[tuple[str, str]]:
    """What each messy answer means, read by the generator's own rules (not nerft's parser)."""
    body = answer.split("</think>")[-1].strip()
    if body in ("实体如下：[]", "无", "结果：[]", "抱歉，我无法回答。"):
        return []
    if body.startswith("```json"):
        body = body[len("```json") : -len("```")]
    elif body.startswith("实体如下："):
        body = body[len("实体如下：") :]
    if body.strip().startswith("["):
        return [(item["label"], item["text"]) for item in json.loads(body)]
    return [tuple(line.split(":", 1)) for line in body.splitlines()]


def test_macro_f1_on_the_messy_dev_file_covers_the_ten_labels(dev_files):
    gold_rows, answers, gold, predictions, folder = dev_files
    report = folder / "report.json"
    result = CliRunner().invoke(
        app, ["eval", "--gold", str(gold), "--predictions", str(predictions), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["records"] == 1343
    assert sorted(data["labels"]) == sorted(CLUENER_LABELS)
    assert data["unparseable"] == sum(1 for a in answers if a == "抱歉，我无法回答。")
    macro, micro, fp = recount(gold_rows, [intended_mentions(a) for a in answers], CLUENER_LABELS)
    assert data["macro"]["f1"] == pytest.approx(macro, abs=1e-9)
    assert data["micro"]["f1"] == pytest.approx(micro, abs=1e-9)
    assert set(data["other_labels"]) == set(INVENTED)
    assert data["other_labels"] == {label: fp[label] for label in INVENTED}
    assert "实体如下" not in data["other_labels"] and "结果" not in data["other_labels"]
    # The old rule (macro over every label seen) is lower: invented labels each averaged in with F1 0.
    old_macro = macro * 10 / 13
    assert data["macro"]["f1"] > old_macro + 0.1
    table = result.stdout.splitlines()
    assert [line.split()[0] for line in table[1:11]] == sorted(CLUENER_LABELS)
    assert table[13].startswith("Other labels (not the dataset's;")
    assert "Other labels" in (folder / "report.md").read_text(encoding="utf-8")
