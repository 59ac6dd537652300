"""Training tokens per sample, counted the way LLaMA-Factory's `qwen` template encodes an alpaca example.

LLaMA-Factory joins `instruction` and `input` with a newline into the user turn, falls back to the
template's default system prompt when `system` is empty, and tokenizes each slot of the template
on its own (`Template._convert_elements_to_ids`). The prompt part (system + user turn + the
assistant header) is masked out of the loss; the response part (the answer and `<|im_end|>\\n`) is
what the loss is computed on. `tests/test_bench_tokens.py` checks this module against
LLaMA-Factory's own `encode_oneturn`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from nerft.inference.chat import NATIVE_TEMPLATES, QWEN_ASSISTANT, QWEN_SYSTEM, QWEN_USER
from nerft.prompts import alpaca_user_turn

QWEN_DEFAULT_SYSTEM = NATIVE_TEMPLATES["qwen"]


def qwen_segments(example: dict) -> tuple[list[str], list[str]]:
    """The strings LLaMA-Factory tokenizes for one alpaca example: (prompt slots, response slots)."""
    system = example.get("system") or QWEN_DEFAULT_SYSTEM
    prompt = [QWEN_SYSTEM.format(content=system), QWEN_USER.format(content=alpaca_user_turn(example))]
    response = [QWEN_ASSISTANT.format(content=example.get("output", ""))]
    return prompt, response


@dataclass(frozen=True)
class SampleTokens:
    """Tokens of one training sample: the masked prompt and the response the loss is computed on."""

    prompt: int
    response: int

    @property
    def total(self) -> int:
        return self.prompt + self.response


def count_sample_tokens(tokenizer, examples: Iterable[dict], *, batch_size: int = 512) -> Iterator[SampleTokens]:
    """Yield the token counts of each example, in order.

    Segments go to the tokenizer in batches (a fast tokenizer encodes a batch in one call), each
    segment on its own and without added special tokens, as LLaMA-Factory does.
    """
    examples = iter(examples)
    while batch := list(islice(examples, batch_size)):
        segments: list[str] = []
        shapes: list[tuple[int, int]] = []
        for example in batch:
            prompt, response = qwen_segments(example)
            segments += prompt + response
            shapes.append((len(prompt), len(response)))
        lengths = [len(ids) for ids in tokenizer(segments, add_special_tokens=False)["input_ids"]]
        position = 0
        for n_prompt, n_response in shapes:
            prompt_tokens = sum(lengths[position : position + n_prompt])
            position += n_prompt
            response_tokens = sum(lengths[position : position + n_response])
            position += n_response
            yield SampleTokens(prompt_tokens, response_tokens)


@dataclass(frozen=True)
class TokenSummary:
    """Totals over a dataset in one prompt format."""

    samples: int
    prompt_tokens: int
    response_tokens: int
    max_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.response_tokens

    @property
    def mean_tokens(self) -> float:
        return self.total_tokens / self.samples if self.samples else 0.0

    @property
    def mean_prompt(self) -> float:
        return self.prompt_tokens / self.samples if self.samples else 0.0

    @property
    def mean_response(self) -> float:
        return self.response_tokens / self.samples if self.samples else 0.0

    @property
    def response_share(self) -> float:
        """The share of a sample's tokens that carry loss: the rest is compute spent on context."""
        return self.response_tokens / self.total_tokens if self.total_tokens else 0.0

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "total_tokens": self.total_tokens,
            "mean_tokens": round(self.mean_tokens, 2),
            "mean_prompt": round(self.mean_prompt, 2),
            "mean_response": round(self.mean_response, 2),
            "response_share": round(self.response_share, 4),
            "max_tokens": self.max_tokens,
        }


def summarize_tokens(counts: Sequence[SampleTokens]) -> TokenSummary:
    return TokenSummary(
        samples=len(counts),
        prompt_tokens=sum(c.prompt for c in counts),
        response_tokens=sum(c.response for c in counts),
        max_tokens=max((c.total for c in counts), default=0),
    )


def compare_formats(
    records: Sequence,
    tokenizer,
    *,
    formats: Sequence[str] = ("seed", "compact"),
    batch_size: int = 4,
    cutoff_len: int | None = None,
    seed: int = 0,
) -> dict:
    """Tokens per sample and padding per batching strategy of each prompt format, on the same records.

    Packed rows are `cutoff_len` long, or with None the length `nerft train` picks for that
    format's data (`cutoff_len: auto` with packing: about `batch_size` mean samples, at least the
    longest one). Returns `{format: {"tokens": TokenSummary, "cutoff_len": int,
    "padding": {strategy: PaddingStats}}}`.
    """
    from benchlib.padding import STRATEGIES, padding_stats
    from nerft.prompts import get_format

    results = {}
    for name in formats:
        fmt = get_format(name)
        counts = list(count_sample_tokens(tokenizer, (fmt.example(record) for record in records)))
        lengths = [count.total for count in counts]
        row = cutoff_len or packing_cutoff_len(lengths, batch_size)
        results[name] = {
            "tokens": summarize_tokens(counts),
            "cutoff_len": row,
            "padding": {
                strategy: padding_stats(lengths, strategy, batch_size=batch_size, cutoff_len=row, seed=seed)
                for strategy in STRATEGIES
            },
        }
    return results


def packing_cutoff_len(lengths: Sequence[int], batch_size: int) -> int:
    """The pack length `nerft train` chooses for these sample lengths (`nerft.training.lengths`)."""
    from nerft.training.lengths import length_stats, plan_sequences

    plan = plan_sequences(
        length_stats(lengths, "bench"),
        cutoff_len="auto",
        packing=True,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=1,
    )
    return plan.cutoff_len
