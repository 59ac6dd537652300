"""Prompt formats: how a CLUE NER record becomes an alpaca example, and back.

`compact` (the default) is built for cost: a two-token system prompt, no instruction beyond the
sentence, and one `label:entity` line per mention. Fine-tuning teaches the model the task, so the
long instruction the tutorials repeat in every sample (about 140 Qwen2 tokens) buys nothing; the
label names are CLUENER's own English words, each a single Qwen2 token. A sentence with no entity
gets `无` ("none"): one token that tells a deliberate "no entity" from an empty or cut-off generation.

`seed` reproduces the tutorials' long Chinese instruction and their JSON list output, for
side-by-side comparison.

Both list mentions in order of first occurrence, each (label, text) pair once: CLUE's scoring
compares sets of entity strings per label, so nothing it counts is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nerft.errors import ConfigError

if TYPE_CHECKING:
    from nerft.data.records import CluenerRecord

CLUENER_LABELS = (
    "name",
    "organization",
    "scene",
    "company",
    "movie",
    "book",
    "government",
    "position",
    "address",
    "game",
)

COMPACT_SYSTEM = "NER"
COMPACT_NONE = "无"

SEED_SYSTEM = "You are a helpful assistant."
SEED_INSTRUCTION = (
    "你是一个文本实体识别领域的专家，请从给定的句子中识别并提取出以下指定类别的实体。\n\n"
    "<实体类别集合>\n{labels}\n\n"
    "<任务说明>\n"
    "1. 仅提取属于上述类别的实体，忽略其他类型的实体。\n"
    "2. 以json格式输出，对于每个识别出的实体，请提供：\n"
    "   - label: 实体类型，必须严格使用原始类型标识（不可更改）\n"
    "   - text: 实体在原文中的原文内容\n\n"
    "<输出格式要求>\n"
    "```json\n"
    '[{{"label": "实体类别", "text": "实体名称"}}]\n'
    "```"
)


def alpaca_user_turn(example: dict) -> str:
    """The user turn of an alpaca example as LLaMA-Factory's converter builds it: instruction and
    input joined with a newline, empty parts left out."""
    return "\n".join(part for part in (example.get("instruction"), example.get("input")) if part)


@dataclass(frozen=True)
class PromptFormat:
    """What goes into the system prompt and instruction, and how entities are written out."""

    name: str
    labels: tuple[str, ...] = CLUENER_LABELS

    @property
    def system(self) -> str:
        return COMPACT_SYSTEM if self.name == "compact" else SEED_SYSTEM

    @property
    def instruction(self) -> str:
        if self.name == "compact":
            return ""
        return SEED_INSTRUCTION.format(labels=", ".join(self.labels))

    def render_output(self, mentions: list[tuple[str, str]]) -> str:
        if self.name == "compact":
            return "\n".join(f"{label}:{text}" for label, text in mentions) or COMPACT_NONE
        return json.dumps([{"label": label, "text": text} for label, text in mentions], ensure_ascii=False)

    def unreadable(self, mentions: list[tuple[str, str]]) -> str | None:
        """Why the answer `render_output(mentions)` would not read back as `mentions`, else None.

        The parser is the judge: an entity whose text looks like JSON in `compact` ("[]",
        `{"a": 1}`) or holds an end-of-turn token (`<|im_end|>`) or a newline would be taught as
        one answer and scored as another; `prepare` refuses it. The parser strips an entity's
        outer whitespace, which `prepare` only warns about (the record is kept as it is)."""
        from nerft.metrics.parse import parse_output

        for mention in mentions:
            read = parse_output(self.render_output([mention]))
            if read != [_stripped(mention)]:
                label, text = mention
                answer = self.render_output([mention])
                return f"{label} {text!r}: the {self.name} answer {answer!r} reads back as {_readback(read)}"
        read = parse_output(self.render_output(mentions))
        if read != [_stripped(mention) for mention in mentions]:
            return f"the {self.name} answer of these entities reads back as {_readback(read)}"
        return None

    def example(self, record: CluenerRecord) -> dict:
        """The alpaca example for a record: instruction, input, output and system.

        In `compact` the sentence is the instruction and `input` is empty, which renders as the bare
        sentence in the user turn (LLaMA-Factory joins instruction and input with a newline).
        """
        return self.alpaca(record.text, self.render_output(record.mentions()) if record.labelled else "")

    def alpaca(self, text: str, output: str = "") -> dict:
        """The alpaca example of a sentence and its answer (`output`, empty at inference)."""
        if self.name == "compact":
            return {"instruction": text, "input": "", "output": output, "system": self.system}
        return {"instruction": self.instruction, "input": text, "output": output, "system": self.system}

    def user_message(self, text: str) -> str:
        """The user turn at inference, exactly as LLaMA-Factory renders it at training."""
        return alpaca_user_turn(self.alpaca(text))

    def max_new_tokens(self, text: str) -> int:
        """A bound on the answer's length: every character of the sentence in an entity, plus markup.

        Qwen2 never spends more than one token per Chinese character, so the bound is safe for
        CLUE NER; it stops a model that loops from running to a generic 512-token limit.
        """
        per_char = 1 if self.name == "compact" else 2
        return 16 + len(text) * per_char * 2


def _stripped(mention: tuple[str, str]) -> tuple[str, str]:
    return mention[0], mention[1].strip()


def _readback(read: list[tuple[str, str]] | None) -> str:
    if read is None:
        return "nothing (unparseable)"
    return ", ".join(f"{label}:{text!r}" for label, text in read) or "no entity"


PROMPT_FORMATS = ("compact", "seed")


def get_format(name: str, labels: tuple[str, ...] | list[str] | None = None) -> PromptFormat:
    if name not in PROMPT_FORMATS:
        raise ConfigError(f"unknown prompt format {name!r} (choose from: {', '.join(PROMPT_FORMATS)})")
    return PromptFormat(name=name, labels=tuple(labels) if labels else CLUENER_LABELS)
