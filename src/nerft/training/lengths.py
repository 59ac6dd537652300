"""`cutoff_len: auto`: sequence lengths measured on the data, not a guessed 1024.

The robust measure is the one LLaMA-Factory itself will see: every prepared example (train and
dev) rendered through LLaMA-Factory's chat template and tokenized by the model's own tokenizer,
exactly as its supervised processor does. Counting characters (e.g. `max_chars` in
`<name>_meta.json`) would not do: tokens per character differ between tokenizers and scripts,
and the template adds its own tokens. When the tokenizer is not on disk yet (a `--dry-run` before
`nerft download`), an upper bound from UTF-8 bytes stands in: a byte-level BPE never makes more
tokens than bytes.

`plan_sequences` turns the lengths into `cutoff_len` and batch sizes:
- without packing, `cutoff_len` is the longest example rounded up to a multiple of 8: nothing is
  truncated, and batches are padded to their own longest example anyway, so a larger value would
  buy nothing;
- with packing, each micro-batch is one pack of `per_device_train_batch_size` examples on average:
  `cutoff_len` (the pack length) = that many mean-length examples, and at least the longest one
  (LLaMA-Factory drops longer examples when packing), and the batch size LLaMA-Factory sees is 1
  (FlashAttention-2 neat packing requires it; for SDPA the block-diagonal mask of one long pack
  costs the same as that of several short rows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nerft.data.prepare import DATASET_INFO, read_dataset_info
from nerft.errors import ConfigError, DataError
from nerft.inference.chat import llamafactory_template
from nerft.io import read_json
from nerft.prompts import alpaca_user_turn

TEMPLATE_OVERHEAD_BOUND = 32  # special tokens, role names and newlines of any chat template, generously


@dataclass(frozen=True)
class LengthStats:
    count: int
    longest: int
    mean: float
    method: str  # how they were measured, for the log

    @property
    def exact(self) -> bool:
        return not self.method.startswith("upper bound")


# CLUENER train + dev through the Qwen2 tokenizer and the qwen template (scripts/bench_tokens.py).
CLUENER_QWEN2_LENGTHS = {
    "compact": LengthStats(count=12091, longest=138, mean=53.2, method="CLUENER with the Qwen2 tokenizer, measured"),
    "seed": LengthStats(count=12091, longest=360, mean=220.6, method="CLUENER with the Qwen2 tokenizer, measured"),
}


@dataclass(frozen=True)
class SequencePlan:
    cutoff_len: int
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    note: str


def round_up(value: float, multiple: int = 8) -> int:
    return int(math.ceil(value / multiple) * multiple)


def iter_alpaca_examples(dataset_dir: Path, dataset_names: Iterable[str]) -> Iterator[dict]:
    """The alpaca examples of registered datasets, read through dataset_info.json."""
    info_path = Path(dataset_dir) / DATASET_INFO
    info = read_dataset_info(dataset_dir)
    for name in dataset_names:
        if info[name].get("formatting", "alpaca") != "alpaca":
            raise ConfigError(
                f"dataset.cutoff_len: auto measures alpaca datasets, and {name!r} in {info_path} is {info[name]['formatting']}",
                hint="set dataset.cutoff_len to a number",
            )
        yield from read_json(Path(dataset_dir) / info[name]["file_name"], expect=list, what="a prepared dataset")


def measure_token_lengths(examples: Iterable[dict], *, tokenizer_dir: str | Path, template: str) -> LengthStats:
    """Token lengths of examples as LLaMA-Factory's supervised processor encodes them.

    The template is applied twice: once to collect the strings it would tokenize, which are then
    tokenized in one batch (the Rust tokenizer's batch call is ~10x faster than one call per
    string), and once more reading the token ids from that batch, so the counts are exactly
    LLaMA-Factory's.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=True)
    chat = llamafactory_template(tokenizer, template)
    extra = 1 if chat.efficient_eos else 0
    conversations = [
        (
            [
                {"role": "user", "content": alpaca_user_turn(example)},
                {"role": "assistant", "content": example.get("output", "")},
            ],
            example.get("system") or None,
        )
        for example in examples
    ]
    batched = _BatchedTokenizer(tokenizer)
    for messages, system in conversations:
        chat.encode_multiturn(batched, messages, system)
    batched.tokenize_recorded()
    lengths = [
        sum(len(source) + len(target) for source, target in chat.encode_multiturn(batched, messages, system)) + extra
        for messages, system in conversations
    ]
    return length_stats(lengths, f"tokens of {Path(tokenizer_dir).name}'s tokenizer, template {template}")


class _BatchedTokenizer:
    """A tokenizer whose `encode` first records its strings, then answers from one batched call."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._ids: dict[str, list[int]] | None = None
        self._recorded: set[str] = set()

    def encode(self, text, add_special_tokens=True, **kwargs):
        if add_special_tokens or kwargs:
            return self._tokenizer.encode(text, add_special_tokens=add_special_tokens, **kwargs)
        if self._ids is None:
            self._recorded.add(text)
            return []
        ids = self._ids.get(text)
        return ids if ids is not None else self._tokenizer.encode(text, add_special_tokens=False)

    def tokenize_recorded(self) -> None:
        texts = sorted(self._recorded)
        encoded = self._tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        self._ids = dict(zip(texts, encoded))

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def bound_token_lengths(examples: Iterable[dict]) -> LengthStats:
    """An upper bound of token lengths without a tokenizer: UTF-8 bytes plus the template's tokens."""
    lengths = [
        sum(
            len(part.encode("utf-8"))
            for part in (example.get("system") or "", alpaca_user_turn(example), example.get("output", ""))
        )
        + TEMPLATE_OVERHEAD_BOUND
        for example in examples
    ]
    return length_stats(lengths, "upper bound from UTF-8 bytes (no tokenizer on disk yet)")


def length_stats(lengths: Sequence[int], method: str) -> LengthStats:
    """Count, longest and mean of sample lengths; `method` says how they were measured."""
    if not lengths:
        raise DataError("no examples to measure")
    return LengthStats(count=len(lengths), longest=max(lengths), mean=sum(lengths) / len(lengths), method=method)


def plan_sequences(
    stats: LengthStats | None,
    *,
    cutoff_len: int | str,
    packing: bool,
    per_device_train_batch_size: int,
    per_device_eval_batch_size: int,
) -> SequencePlan:
    """`cutoff_len` and the batch sizes LLaMA-Factory gets (see the module docstring)."""
    if not packing:
        if cutoff_len == "auto":
            value = round_up(stats.longest)
            note = f"cutoff_len {value}: longest of {stats.count} examples is {stats.longest} ({stats.method})"
        else:
            value = int(cutoff_len)
            note = f"cutoff_len {value}: set in the config"
            if stats is not None and stats.exact and stats.longest > value:
                note += f"; the longest example ({stats.longest} tokens) will be truncated"
        return SequencePlan(value, per_device_train_batch_size, per_device_eval_batch_size, note)

    if cutoff_len == "auto":
        # LLaMA-Factory keeps a packed example only if it is shorter than cutoff_len (it subtracts
        # one for packing), hence longest + 1.
        value = round_up(max(stats.longest + 1, per_device_train_batch_size * stats.mean))
        note = (
            f"packing: cutoff_len {value} holds about {value / stats.mean:.1f} examples of mean length {stats.mean:.1f} "
            f"(longest {stats.longest}, {stats.method}); batch size 1 pack per device"
        )
    else:
        value = int(cutoff_len)
        note = f"packing: cutoff_len {value} (set in the config); batch size 1 pack per device"
        if stats is not None and stats.exact and stats.longest + 1 > value:
            note += f"; examples longer than {value - 1} tokens (the longest is {stats.longest}) are dropped"
    return SequencePlan(value, 1, 1, note)
