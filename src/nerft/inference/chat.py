"""The chat turn a trained model sees at inference, built exactly as LLaMA-Factory built it at training.

Training wrote alpaca examples (`PromptFormat.example`), and LLaMA-Factory turned each into
`system` + one user turn with its chat template. Inference must send the same: the system prompt
and user message come from the run's prompt format (`ChatRequest.for_text`), and engines that tokenize
themselves (hf, vllm) encode them with `ChatTemplate`, which reproduces LLaMA-Factory's encoding:
every rendered slot encoded on its own, without special tokens added by the tokenizer.

The `qwen` template (Qwen2.5) and `qwen3_nothink` (Qwen3 without thinking: the same slots, no
default system prompt) are written out here, so predicting with Qwen needs no llamafactory import
(about 15 s on a small machine); any other template is taken from LLaMA-Factory itself. (`qwen3`,
with thinking, is a ReasoningTemplate that appends an empty think block to the prompt: it comes
from LLaMA-Factory too.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nerft.errors import ModelError

# LLaMA-Factory 0.9.5, data/template.py, register_template(name="qwen", ...): the one home of the
# Qwen chat format (bench/tokens.py counts training tokens with it, models/tiny.py writes the tiny
# tokenizer's chat template from it).
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
QWEN_SYSTEM = IM_START + "system\n{content}" + IM_END + "\n"
QWEN_USER = IM_START + "user\n{content}" + IM_END + "\n" + IM_START + "assistant\n"
QWEN_ASSISTANT = "{content}" + IM_END + "\n"  # the answer and its end, what the loss is computed on
QWEN_STOP_WORDS = (IM_END,)
# The templates written out here, and each one's default_system (used when the system prompt is empty).
NATIVE_TEMPLATES = {
    "qwen": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "qwen3_nothink": "",  # register_template(name="qwen3_nothink", ...): the qwen slots, no default system
}


def render_qwen(system: str, user: str, template: str = "qwen") -> str:
    """The prompt text of LLaMA-Factory's `qwen` (or `qwen3_nothink`) template, up to where the answer starts."""
    system = system or NATIVE_TEMPLATES[template]
    return (QWEN_SYSTEM.format(content=system) if system else "") + QWEN_USER.format(content=user)


def llamafactory_template(tokenizer: Any, name: str) -> Any:
    """LLaMA-Factory's template `name`, fitted to `tokenizer` as its training fits it.

    LLaMA-Factory logs what it adds ("Add <|im_end|> to stop words.") on stdout, where nerft writes
    its results (predictions, tables): its template logger is quieted to warnings first."""
    import logging

    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    logging.getLogger("llamafactory.data.template").setLevel(logging.WARNING)
    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))


@dataclass
class ChatTemplate:
    """Turns (system, user) into prompt token ids and knows the tokens that end an answer."""

    name: str
    tokenizer: Any
    stop_words: tuple[str, ...] = ()
    _llamafactory_template: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, name: str, tokenizer: Any) -> ChatTemplate:
        if name in NATIVE_TEMPLATES:
            return cls(name, tokenizer, QWEN_STOP_WORDS)
        from llamafactory.data.template import TEMPLATES

        if name not in TEMPLATES:
            raise ModelError(f"unknown LLaMA-Factory template {name!r}")
        template = llamafactory_template(tokenizer, name)
        return cls(name, tokenizer, tuple(template.stop_words), template)

    def encode(self, system: str, user: str) -> list[int]:
        if self._llamafactory_template is None:
            # LLaMA-Factory encodes the system slot and the user slot separately; encoding them one
            # by one keeps a BPE merge from ever crossing the boundary between them.
            # LLaMA-Factory writes no system slot when both the system prompt and the default are empty.
            encode = self.tokenizer.encode
            system = system or NATIVE_TEMPLATES[self.name]
            system_ids = encode(QWEN_SYSTEM.format(content=system), add_special_tokens=False) if system else []
            return system_ids + encode(QWEN_USER.format(content=user), add_special_tokens=False)
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": ""}]
        prompt_ids, _ = self._llamafactory_template.encode_oneturn(self.tokenizer, messages, system)
        return prompt_ids

    @property
    def stop_token_ids(self) -> list[int]:
        """The eos token and every stop word, as LLaMA-Factory's `get_stop_token_ids` lists them."""
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        for word in self.stop_words:
            token_id = self.tokenizer.convert_tokens_to_ids(word)
            if token_id is not None and token_id not in ids:
                ids.append(token_id)
        return ids
