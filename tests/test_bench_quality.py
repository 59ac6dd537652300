"""scripts/bench_quality.py's scoring: CLUE's micro and macro F1 from per-sentence counts, and the
bootstrap interval over sentences (the arms themselves are run by hand: they train for minutes)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import load_script

from nerft.metrics.clue import score_clue

bench = load_script("bench_quality")
LABELS = ("name", "address", "company")


def test_sentence_counts_follow_clue_set_scoring_and_keep_other_labels_apart():
    gold = [("name", "王立明"), ("address", "杭州"), ("name", "王立明")]  # a repeat counts once
    predicted = [("name", "王立明"), ("company", "阿里"), ("公司名", "阿里")]
    counts = bench.sentence_counts(gold, predicted, LABELS)
    # rows: name, address, company, other; columns: tp, fp, fn
    assert counts.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0]]


def test_micro_and_macro_by_hand():
    totals = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0]])
    micro, macro = bench.f1_scores(totals)
    # micro: tp 1, fp 2, fn 1 -> P 1/3, R 1/2, F1 0.4; macro: name 1, address 0, company 0 -> 1/3
    assert micro == pytest.approx(0.4)
    assert macro == pytest.approx(1 / 3)


def test_the_scores_equal_nerft_s_clue_scoring_on_random_sentences():
    rng = random.Random(7)
    words = ["甲", "乙", "丙", "丁"]
    gold, predicted = [], []
    for _ in range(60):
        gold.append([(rng.choice(LABELS), rng.choice(words)) for _ in range(rng.randint(0, 3))])
        predicted.append([(rng.choice(LABELS + ("game",)), rng.choice(words)) for _ in range(rng.randint(0, 3))])
    counts = np.stack([bench.sentence_counts(g, p, LABELS) for g, p in zip(gold, predicted)])
    micro, macro = bench.f1_scores(counts.sum(0))
    scores = score_clue(gold, predicted, labels=LABELS)
    assert micro == pytest.approx(scores.micro.f1)
    assert macro == pytest.approx(scores.macro_f1)


def test_the_bootstrap_interval_holds_the_estimate_and_is_a_point_when_every_sentence_is_alike():
    perfect = np.stack([bench.sentence_counts([("name", "甲")], [("name", "甲")], LABELS)] * 20)
    assert bench.bootstrap(perfect, samples=200) == ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    rng = random.Random(3)
    mixed = np.stack(
        [
            bench.sentence_counts([("name", "甲")], [("name", "甲" if rng.random() < 0.6 else "乙")], LABELS)
            for _ in range(100)
        ]
    )
    (micro, low, high), _ = bench.bootstrap(mixed, samples=500)
    assert low < micro < high and high - low < 0.3
