"""How many of the positions a training step computes are padding, per batching strategy.

Given the token length of every training sample:
- `random`: batches in shuffled order, each padded to its longest sample (what LLaMA-Factory does
  by default: `DataCollatorForSeq2Seq`, padded up to a multiple of 8 when training);
- `grouped`: transformers' `group_by_length` sampler: shuffled, cut into mega-batches of up to 50
  batches, each sorted by length, so a batch holds samples of similar length;
- `packed`: LLaMA-Factory's `packing` / `neat_packing`: samples packed greedily (its own
  `greedy_knapsack`) into rows of exactly `cutoff_len` positions, the rest of a row padded. As in
  LLaMA-Factory, packing lowers the capacity to `cutoff_len - 1` and drops longer samples.

The waste is padding / computed positions; `positions_per_sample` is the compute a sample costs,
padding included, the figure to compare across prompt formats.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

STRATEGIES = ("random", "grouped", "packed")
MEGABATCH_BATCHES = 50  # transformers' `get_length_grouped_indices` default


@dataclass(frozen=True)
class PaddingStats:
    strategy: str
    samples: int  # samples that were batched (packing drops the ones longer than its capacity)
    rows: int  # sequences the model runs: one per sample, or one per packed row
    real_tokens: int
    computed_tokens: int  # real tokens plus padding
    dropped: int = 0

    @property
    def pad_tokens(self) -> int:
        return self.computed_tokens - self.real_tokens

    @property
    def waste(self) -> float:
        return self.pad_tokens / self.computed_tokens if self.computed_tokens else 0.0

    @property
    def positions_per_sample(self) -> float:
        return self.computed_tokens / self.samples if self.samples else 0.0

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "samples": self.samples,
            "rows": self.rows,
            "real_tokens": self.real_tokens,
            "computed_tokens": self.computed_tokens,
            "waste": round(self.waste, 4),
            "positions_per_sample": round(self.positions_per_sample, 2),
            "dropped": self.dropped,
        }


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple if multiple > 1 else value


def batch_padding(batches: Sequence[Sequence[int]], *, strategy: str, multiple_of: int = 8) -> PaddingStats:
    """Padding of batches given as lists of sample lengths, each padded to its longest sample."""
    real = sum(sum(batch) for batch in batches)
    computed = sum(round_up(max(batch), multiple_of) * len(batch) for batch in batches if batch)
    samples = sum(len(batch) for batch in batches)
    return PaddingStats(strategy, samples, samples, real, computed)


def random_batches(lengths: Sequence[int], batch_size: int, *, seed: int = 0) -> list[list[int]]:
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return [[lengths[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int = 0) -> list[list[int]]:
    """transformers' `get_length_grouped_indices`: shuffle, sort within mega-batches, cut into batches."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    multiple = max(min(len(lengths) // (batch_size * 4), MEGABATCH_BATCHES), 1)
    megabatch = multiple * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), megabatch):
        group = sorted((lengths[i] for i in order[start : start + megabatch]), reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def greedy_knapsack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """LLaMA-Factory's packing (`processor_utils.greedy_knapsack`): fill each row with the longest fitting sample."""
    remaining = sorted(lengths)
    rows: list[list[int]] = []
    while remaining:
        row: list[int] = []
        space = capacity
        while (index := bisect.bisect(remaining, space)) > 0:
            length = remaining.pop(index - 1)
            space -= length
            row.append(length)
        if not row:  # nothing fits: only reachable with samples longer than the capacity
            break
        rows.append(row)
    return rows


def packed_padding(lengths: Sequence[int], cutoff_len: int) -> PaddingStats:
    """Padding of LLaMA-Factory's packed rows for a configured `cutoff_len`."""
    capacity = cutoff_len - 1  # LLaMA-Factory's DataArguments lowers cutoff_len by one when packing
    kept = [length for length in lengths if length <= capacity]
    rows = greedy_knapsack(kept, capacity)
    real = sum(kept)
    return PaddingStats("packed", len(kept), len(rows), real, len(rows) * cutoff_len, dropped=len(lengths) - len(kept))


def padding_stats(
    lengths: Sequence[int],
    strategy: str,
    *,
    batch_size: int = 16,
    cutoff_len: int = 1024,
    multiple_of: int = 8,
    seed: int = 0,
) -> PaddingStats:
    if strategy == "random":
        return batch_padding(random_batches(lengths, batch_size, seed=seed), strategy=strategy, multiple_of=multiple_of)
    if strategy == "grouped":
        return batch_padding(
            grouped_batches(lengths, batch_size, seed=seed), strategy=strategy, multiple_of=multiple_of
        )
    if strategy == "packed":
        return packed_padding(lengths, cutoff_len)
    raise ValueError(f"unknown batching strategy {strategy!r} (choose from: {', '.join(STRATEGIES)})")
