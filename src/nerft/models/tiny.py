"""A tiny random Qwen2 chat model that nerft builds itself, so CPU runs and tests need no model hub.

It has the Qwen2 architecture and the Qwen chat special tokens, so LLaMA-Factory's `qwen`
template, LoRA, export and the API server treat it like the real model. Its tokenizer is a
byte-level BPE trained on the bundled sample (any text still tokenizes, byte by byte) unless a
real Qwen2 tokenizer folder is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nerft.inference.chat import IM_END, IM_START
from nerft.io import read_json, replace_dir, staging_dir
from nerft.prompts import CLUENER_LABELS, SEED_INSTRUCTION
from nerft.resources import sample_dir

SPECIAL_TOKENS = ["<|endoftext|>", IM_START, IM_END]
# Qwen2's own tokenizer template (its default system prompt differs from LLaMA-Factory's), written
# with the chat format's tokens of nerft.inference.chat.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    f"{{{{ '{IM_START}system\\nYou are a helpful assistant.{IM_END}\\n' }}}}{{% endif %}}"
    f"{{{{ '{IM_START}' + message['role'] + '\\n' + message['content'] + '{IM_END}\\n' }}}}"
    "{% endfor %}"
    f"{{% if add_generation_prompt %}}{{{{ '{IM_START}assistant\\n' }}}}{{% endif %}}"
)
# Heads 32 wide: vLLM's CPU attention refuses head sizes under 32.
TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
MARKER = "nerft_tiny.json"
TINY_VOCAB = 1024


def mid_size(hidden: int, layers: int) -> dict:
    """`size` of a larger model of the tiny family: heads 32 wide, an MLP three times the width."""
    if hidden % 32:
        raise ValueError(f"hidden size {hidden} is not a multiple of 32 (the head width)")
    heads = hidden // 32
    return dict(
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
    )


def default_corpus() -> list[str]:
    """Texts to train the tiny tokenizer on: the bundled sample and the prompt vocabulary."""

    texts = [SEED_INSTRUCTION, " ".join(CLUENER_LABELS), "NER 无 You are a helpful assistant."]

    sample = sample_dir()
    for path in sorted(sample.glob("*.jsonl")) if sample.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


def build_tiny_qwen2(
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    corpus: list[str] | None = None,
    vocab_size: int = TINY_VOCAB,
    seed: int = 0,
    size: dict | None = None,
) -> Path:
    """Write a tiny random Qwen2ForCausalLM with its tokenizer to `out_dir` and return the path.

    `size` overrides entries of `TINY_CONFIG` (`hidden_size`, `num_hidden_layers`, ...): a larger
    model with the same tokenizer, for measurements where a forward pass must cost something
    (`mid_size`). Idempotent: an existing folder built with the same settings is reused.
    """
    out_dir = Path(out_dir)
    architecture = {**TINY_CONFIG, **(size or {})}
    settings = {"tokenizer_dir": str(tokenizer_dir) if tokenizer_dir else None, "vocab_size": vocab_size, "seed": seed, **architecture}
    marker = out_dir / MARKER
    if marker.is_file() and read_json(marker) == settings and (out_dir / "config.json").is_file():
        return out_dir

    import torch
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    staging = staging_dir(out_dir)  # unique: parallel first builds must not share one
    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(corpus or default_corpus(), vocab_size))
        tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.padding_side = "left"

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        **architecture,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MARKER).write_text(json.dumps(settings, indent=2))
    replace_dir(staging, out_dir)
    return out_dir


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer
