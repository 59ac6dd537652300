"""Measurement logic behind `scripts/bench_*.py`: what each benchmark counts, separate from timing it.

- `tokens`: training tokens per sample, as LLaMA-Factory's `qwen` template encodes them;
- `padding`: the share of computed positions that are padding, per batching strategy;
- `memory`: wall time and peak resident memory of a child process;
- `synthetic`: large CLUE NER files made from real records, for memory-growth checks;
- `inference`: sequential vs batched generation through one engine;
- `training`: LLaMA-Factory configs of the tutorials and of nerft, for a same-GPU throughput run;
- `machine`: a one-line description of the hardware a figure was measured on.

Benchmarks are scripts, not timed tests: the tests check this logic on inputs small enough to count
by hand.
"""
