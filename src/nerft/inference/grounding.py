"""Grounded answers: entities that are substrings of their sentence, and a confidence for each.

An answer of either prompt format is a list of items, a label and an entity each, spelled exactly
as training wrote them (`PromptFormat.render_output`):

    compact   name:张三\\naddress:北京                              (no entity: 无)
    seed      [{"label": "name", "text": "张三"}, {"label": ...}]   (no entity: [])

`walk` reads an answer, or the start of one, against that spelling. Given the sentence and the
run's labels it also checks what grounds an answer: every label one of the run's, every entity a
non-empty substring of the sentence (JSON-escaped in `seed`), at most `MAX_ITEMS` items, and an
item written twice only as the answer's last: a repeat is a loop, and the loop ends there. Engines
constrain decoding with it:

- hf: a logits processor (engines/hf.py) asks `AnswerGrammar.allows` of the answer so far plus a
  candidate token, best-scoring candidates first, and keeps the first that passes. The check is on
  the decoded bytes, not on token ids, because a model may tokenize an entity differently from the
  sentence, and a token may end inside a UTF-8 character. When the model's first choice goes on
  after a repeated item (`AnswerGrammar.repeats`), the answer ends: measured on SmolLM2 (docs/
  PERFORMANCE.md, section 8), forbidding the repeat instead made the model stretch it into new,
  wrong entities ("曼联" written again became "曼联之后枪手").
- vLLM (offline, and its server through `nerft serve`): `grounded_regex`, one regular expression per
  sentence whose entities are the sentence's substrings (a suffix trie written as nested optional
  groups). A regular expression cannot forbid a repeated item; `MAX_ITEMS` bounds the lines instead.

A greedy model whose answer is already grounded answers exactly as unconstrained: the first
candidate passes at every step.

Confidence: an engine that reports the log-probability of each generated token gets, for each
item, the product of the probabilities of the tokens that wrote it, its terminator included
(`item_confidences`): in `compact` the newline or end token that decided where the entity stops, in
`seed` the closing `"}`. The answer's own confidence (`answer_confidence`) is the probability of
all of its tokens: how sure the model is of the whole answer, "no entity" included, which
`nerft select` ranks sentences by.

Measured, not assumed: vLLM (offline and served, 0.32) applies the grammar's mask to the logits
before it computes log-probabilities, so a grounded vLLM answer's confidence is the probability
among the answers grounding allows; hf's is under the model's unconstrained distribution. The same
answer gets a higher confidence from grounded vLLM than from hf (0.88 against 0.35 for a learned
tiny run's answer to its first training sentence). Ungrounded, both are the model's own. Thresholds
and `nerft select` rankings are comparable within one engine, not across the two.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nerft.prompts import COMPACT_NONE, PromptFormat

# At most this many items in an answer: twice the most entities of any CLUENER train sentence (10).
# A grounded hf answer cannot loop anyway (a repeated item ends it); for vLLM's regular expression
# this is the bound that stops a loop.
MAX_ITEMS = 20
# Longer texts are constrained to the answer's spelling and labels only: the substring expression
# grows with the square of the length (vLLM compiles one per sentence).
MAX_GROUNDED_CHARS = 256


@dataclass(frozen=True)
class AnswerShape:
    """The fixed spelling of an answer: the literals around each item and between items."""

    none: bytes  # the whole answer when there is no entity
    open: bytes
    before_label: bytes
    after_label: bytes  # between the label and the entity
    after_entity: bytes
    separator: bytes  # between items
    close: bytes
    entity_end: int  # the byte that ends an entity: newline (compact), an unescaped quote (seed)
    escaped: bool  # entities are JSON-escaped (seed)


COMPACT_SHAPE = AnswerShape(
    none=COMPACT_NONE.encode(),
    open=b"",
    before_label=b"",
    after_label=b":",
    after_entity=b"",
    separator=b"\n",
    close=b"",
    entity_end=ord("\n"),
    escaped=False,
)
SEED_SHAPE = AnswerShape(
    none=b"[]",
    open=b"[",
    before_label=b'{"label": "',
    after_label=b'", "text": "',
    after_entity=b'"}',
    separator=b", ",
    close=b"]",
    entity_end=ord('"'),
    escaped=True,
)


def answer_shape(fmt: PromptFormat) -> AnswerShape:
    return SEED_SHAPE if fmt.name == "seed" else COMPACT_SHAPE


def escape_units(shape: AnswerShape, text: str) -> list[str]:
    """The sentence's characters as an answer spells them: JSON escapes in `seed`."""
    if not shape.escaped:
        return list(text)
    return [json.dumps(char, ensure_ascii=False)[1:-1] for char in text]


@dataclass(frozen=True)
class Item:
    """One (label, entity) of an answer and the bytes of the answer that wrote it.

    `start` is the item's first byte; `end` is one past its terminator: in `compact` the newline
    after the entity, or the answer's end (where the end token stands); in `seed` the closing `"}`."""

    label: str
    text: str
    start: int
    end: int


@dataclass
class Walk:
    ok: bool  # the bytes start a well-formed (and, when checked, grounded) answer
    complete: bool = False  # and the answer may end here
    items: list[Item] = field(default_factory=list)


def walk(
    shape: AnswerShape,
    answer: bytes,
    *,
    labels: frozenset[bytes] | None = None,
    sentence: bytes | None = None,
    max_items: int | None = None,
    repeats: bool = False,
) -> Walk:
    """Read `answer` (or its beginning) in `shape`. With `labels`, `sentence` (its escaped bytes
    in `seed`) and `max_items` it must also be grounded; without them, the spelling alone counts.
    A grounded item written a second time can only be the answer's last (compact: the end token
    may follow it, nothing else; it is not listed twice), unless `repeats` lets it be anywhere."""
    if shape.none.startswith(answer):
        return Walk(True, answer == shape.none)
    n = len(answer)
    items: list[Item] = []
    seen: set[tuple[bytes, bytes]] = set()

    def literal(at: int, text: bytes) -> int | None:
        """The position after `text` at `at`; -1 when the answer ends inside it; None on a mismatch."""
        rest = answer[at : at + len(text)]
        if rest == text:
            return at + len(text)
        return -1 if at + len(rest) == n and text.startswith(rest) else None

    at = literal(0, shape.open)
    while True:
        if at is None:
            return Walk(False)
        if at == -1:
            return Walk(True, items=items)
        start = at
        if max_items is not None and len(items) >= max_items:
            return Walk(False)
        at = literal(at, shape.before_label)
        if at is None or at == -1:
            return Walk(at == -1, items=items)
        label_end = answer.find(shape.after_label[:1], at)
        if label_end < 0:
            partial = answer[at:]
            ok = (
                any(label.startswith(partial) for label in labels)
                if labels is not None
                else shape.after_label[:1] not in partial and shape.entity_end not in partial
            )
            return Walk(ok, items=items)
        label = answer[at:label_end]
        if (labels is not None and label not in labels) or (labels is None and not label):
            return Walk(False)
        at = literal(label_end, shape.after_label)
        if at is None or at == -1:
            return Walk(at == -1, items=items)
        entity_end = _entity_end(shape, answer, at)
        entity = answer[at:entity_end]
        if entity[:1] and 0x80 <= entity[0] < 0xC0:  # a UTF-8 continuation byte cannot start it
            return Walk(False)
        if sentence is not None and entity not in sentence:
            return Walk(False)
        repeated = sentence is not None and not repeats and (label, entity) in seen
        if entity_end == n:
            if shape.after_entity or not entity or not _whole_characters(entity):  # still being written
                return Walk(True, items=items)
            if repeated:  # a repeat may end the answer (the loop stops there) or grow into a new entity
                return Walk(True, True, items)
            # compact: the entity may also be the answer's last (its end token stands at n)
            items.append(Item(label.decode("utf-8", "replace"), _entity_text(shape, entity) or "", start, n + 1))
            return Walk(True, True, items)
        if not entity or repeated or not _whole_characters(entity):
            return Walk(False)
        seen.add((label, entity))
        text = _entity_text(shape, entity)
        if text is None:
            return Walk(False)
        at = literal(entity_end, shape.after_entity)
        if at is None or at == -1:
            return Walk(at == -1, items=items)
        items.append(Item(label.decode("utf-8", "replace"), text, start, at + (1 if not shape.after_entity else 0)))
        if at == n:
            return Walk(True, not shape.close, items)
        if answer[at:].startswith(shape.separator):
            at += len(shape.separator)
            if at == n:
                return Walk(True, items=items)
            continue
        rest = answer[at:]
        if shape.separator.startswith(rest):
            return Walk(True, items=items)
        if shape.close and shape.close.startswith(rest):
            return Walk(True, rest == shape.close, items)
        return Walk(False)


def _entity_end(shape: AnswerShape, answer: bytes, at: int) -> int:
    """Where the entity that starts at `at` ends: its end byte (an escaped quote does not end a
    seed entity), or the answer's end."""
    if not shape.escaped:
        end = answer.find(bytes([shape.entity_end]), at)
        return len(answer) if end < 0 else end
    i = at
    while i < len(answer):
        if answer[i] == 0x5C:  # a backslash escapes the next byte
            i += 2
            continue
        if answer[i] == shape.entity_end:
            return i
        i += 1
    return len(answer)


def _whole_characters(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _entity_text(shape: AnswerShape, entity: bytes) -> str | None:
    if not shape.escaped:
        return entity.decode("utf-8", "replace")
    try:
        return json.loads(b'"' + entity + b'"')
    except ValueError:
        return None


class AnswerGrammar:
    """The grounded answers to one sentence: `allows(prefix)` and `complete(answer)`, on bytes."""

    def __init__(self, fmt: PromptFormat, text: str, *, max_items: int = MAX_ITEMS):
        self.shape = answer_shape(fmt)
        self.labels = frozenset(label.encode() for label in fmt.labels)
        self.sentence = "".join(escape_units(self.shape, text)).encode()
        self.max_items = max_items

    def walk(self, answer: bytes, *, repeats: bool = False) -> Walk:
        return walk(
            self.shape, answer, labels=self.labels, sentence=self.sentence, max_items=self.max_items, repeats=repeats
        )

    def allows(self, answer: bytes) -> bool:
        return self.walk(answer).ok

    def complete(self, answer: bytes) -> bool:
        return self.walk(answer).complete

    def repeats(self, answer: bytes) -> bool:
        """`answer` would be allowed if an item could be written twice: refused by `allows`, the
        model is looping."""
        return self.walk(answer, repeats=True).ok


# --- vLLM: the same language as one regular expression -------------------------------------------

_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


def regex_literal(text: str) -> str:
    """`text` matched literally, escaping only what a regular expression treats as special (vLLM's
    grammar engines do not all accept Python's `re.escape` of spaces and other characters)."""
    return "".join(
        "\\" + char if char in _REGEX_SPECIAL else "\\n" if char == "\n" else "\\t" if char == "\t" else char
        for char in text
    )


def substring_regex(units: Sequence[str]) -> str:
    """A regular expression of the non-empty runs of consecutive `units`: the suffix trie of the
    sequence, each node a unit followed by its optional continuations."""
    trie: dict = {}
    for start in range(len(units)):
        node = trie
        for unit in units[start:]:
            node = node.setdefault(unit, {})

    def alternatives(node: dict) -> str:
        parts = []
        for unit, child in node.items():
            part = regex_literal(unit)
            if child:
                part += "(?:" + alternatives(child) + ")?"
            parts.append(part)
        return "|".join(parts)

    return "(?:" + alternatives(trie) + ")"


def grounded_regex(fmt: PromptFormat, text: str, *, max_items: int = MAX_ITEMS) -> str:
    """The grounded answers to `text` as a regular expression (repeated items aside)."""
    shape = answer_shape(fmt)
    label = "(?:" + "|".join(regex_literal(name) for name in fmt.labels) + ")"
    none = regex_literal(shape.none.decode())
    if not text:
        return none
    if len(text) <= MAX_GROUNDED_CHARS:
        entity = substring_regex(escape_units(shape, text))
    elif shape.escaped:
        entity = r'(?:[^"\\\n]|\\.)+'
    else:
        entity = "[^\\n]+"
    item = (
        regex_literal(shape.before_label.decode())
        + label
        + regex_literal(shape.after_label.decode())
        + entity
        + regex_literal(shape.after_entity.decode())
    )
    items = f"{item}(?:{regex_literal(shape.separator.decode())}{item}){{0,{max_items - 1}}}"
    whole = regex_literal(shape.open.decode()) + items + regex_literal(shape.close.decode())
    return f"(?:{none}|{whole})"


# --- confidence ----------------------------------------------------------------------------------

Token = tuple[bytes, float]  # a generated token's bytes (b"" for an end token) and its log-probability


def item_confidences(fmt: PromptFormat, tokens: Iterable[Token]) -> dict[tuple[str, str], float]:
    """The confidence of each (label, entity) item of an answer, from its tokens (see the module
    docstring); {} for an answer that is not in the format's spelling. An item written twice keeps
    its first confidence."""
    tokens = list(tokens)
    answer = b"".join(data for data, _ in tokens)
    items = walk(answer_shape(fmt), answer).items
    spans = []
    at = 0
    for data, logprob in tokens:
        spans.append((at, at + len(data), logprob))
        at += len(data)
    found: dict[tuple[str, str], float] = {}
    for item in items:
        total = sum(
            logprob
            for start, end, logprob in spans
            if (start < item.end and end > item.start) or (start == end and item.start <= start < item.end)
        )
        found.setdefault((item.label, item.text), round(math.exp(total), 6))
    return found


def answer_confidence(tokens: Iterable[Token]) -> float:
    """The probability of the whole answer, end token included."""
    return round(math.exp(sum(logprob for _, logprob in tokens)), 6)


# --- the bytes of each token ---------------------------------------------------------------------


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (Qwen2, SmolLM2, Llama 3): the character that stands for each byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars)}


def token_bytes_table(tokenizer) -> list[bytes | None]:
    """Each token id's bytes as it adds them to a decoded answer; None for special tokens, which
    grounded decoding never writes (the end tokens are allowed by id).

    Byte-level BPE tokens are mapped through their alphabet (a token may hold part of a UTF-8
    character); a token of another kind of tokenizer (SentencePiece) through the tokenizer's own
    `convert_tokens_to_string`."""
    alphabet = _byte_level_alphabet()
    special = set(tokenizer.all_special_ids)
    special.update(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    table: list[bytes | None] = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token is None or token_id in special:
            table.append(None)
        elif all(char in alphabet for char in token):
            table.append(bytes(alphabet[char] for char in token))
        else:
            table.append(tokenizer.convert_tokens_to_string([token]).encode())
    return table
