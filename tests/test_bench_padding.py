"""Padding waste per batching strategy, on lengths small enough to count by hand."""

from __future__ import annotations

import pytest
from benchlib.padding import (
    batch_padding,
    greedy_knapsack,
    grouped_batches,
    packed_padding,
    padding_stats,
    random_batches,
    round_up,
)


def test_round_up_to_a_multiple():
    assert [round_up(n, 8) for n in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 24]
    assert round_up(13, 1) == 13


def test_batches_pad_to_their_longest_sample():
    stats = batch_padding([[3, 10], [5, 7]], strategy="random", multiple_of=1)
    # 2 x 10 + 2 x 7 = 34 positions for 25 real tokens
    assert (stats.samples, stats.rows, stats.real_tokens, stats.computed_tokens, stats.pad_tokens) == (4, 4, 25, 34, 9)
    assert stats.waste == 9 / 34
    assert stats.positions_per_sample == 8.5


def test_batches_pad_to_a_multiple_of_8_as_llamafactory_does_when_training():
    stats = batch_padding([[3, 10], [5, 7]], strategy="random", multiple_of=8)
    assert stats.computed_tokens == 2 * 16 + 2 * 8


def test_random_batches_keep_every_sample_once():
    lengths = list(range(1, 11))
    batches = random_batches(lengths, 3, seed=1)
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    assert sorted(length for batch in batches for length in batch) == lengths
    assert batches == random_batches(lengths, 3, seed=1)
    assert batches != random_batches(lengths, 3, seed=2)


def test_grouped_batches_sort_within_megabatches_like_transformers():
    # 16 samples, batch 2: transformers takes min(16 // (2 * 4), 50) = 2 batches per mega-batch.
    lengths = list(range(1, 17))
    batches = grouped_batches(lengths, 2, seed=3)
    assert sorted(length for batch in batches for length in batch) == lengths
    for first, second in zip(batches[::2], batches[1::2]):
        megabatch = first + second
        assert megabatch == sorted(megabatch, reverse=True)


def test_grouping_wastes_less_than_random_order():
    lengths = [10, 200] * 32
    random_stats = padding_stats(lengths, "random", batch_size=4, multiple_of=1)
    grouped_stats = padding_stats(lengths, "grouped", batch_size=4, multiple_of=1)
    assert grouped_stats.real_tokens == random_stats.real_tokens == 32 * 210
    assert grouped_stats.computed_tokens < random_stats.computed_tokens


def test_greedy_knapsack_fills_rows_with_the_longest_sample_that_fits():
    assert greedy_knapsack([600, 500, 300, 200, 100], 1023) == [[600, 300, 100], [500, 200]]


def test_packing_drops_samples_longer_than_its_capacity():
    # LLaMA-Factory packs into cutoff_len - 1 = 1023 and pads each row to 1024 positions.
    stats = packed_padding([600, 500, 300, 200, 100, 1024], 1024)
    assert (stats.samples, stats.rows, stats.real_tokens, stats.computed_tokens, stats.dropped) == (5, 2, 1700, 2048, 1)
    assert stats.waste == 348 / 2048
    assert padding_stats([600, 500, 300, 200, 100, 1024], "packed", cutoff_len=1024) == stats


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown batching strategy 'sorted'"):
        padding_stats([1], "sorted")
