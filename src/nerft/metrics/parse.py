"""Read the entities out of whatever a model answered.

`parse_output(raw)` returns `(label, entity)` pairs in the order written, duplicates kept (scoring
decides what counts), or None when the answer says nothing readable. The rules, in order:

1. Everything from the first end-of-turn token (`<|im_end|>`, `<|endoftext|>`, `</s>`, ...) on is
   dropped; so are the think blocks it opens with (`<think>...</think>`, Qwen3's empty
   `<think>\n\n</think>` too) and the outer whitespace. An answer cut off inside its think
   block said nothing: unparseable.
2. When a line opens a ``` fence, only what is inside the first fence is read (to the closing
   fence, or to the end when the answer was cut off); prose around it is ignored.
3. Empty, or a "none" word (`无`, `none`, `null`, ...): no entity.
4. nerft's compact format: every non-blank line is `label:entity` (ASCII or full-width colon,
   whitespace around either part ignored, an optional `-`/`*`/`1.` bullet) or a "none" word.
   A line whose "entity" is a JSON list or object is prose introducing the answer, never a
   mention: "结果：[{...}]" reads the JSON (rules 5 and 6), "实体如下：[]" names no entity, and
   JSON of no known shape there leaves the answer unparseable. A bracketed entity
   that is not JSON ("book:{三体}") stays an entity.
5. JSON, at the first `[` or `{` that decodes to a known shape: a list of `{"label", "text"}`
   objects (`type`/`entity` accepted as the keys too), a dict `{label: [texts]}` or
   `{label: text}`, CLUE's `{label: {text: spans}}`, a whole CLUE record `{"text", "label"}`.
   A wrapper such as `{"entities": [...]}` is looked through, since the scan goes on inside it.
6. A JSON list cut off mid-way (the generation hit its token limit): the complete objects before
   the cut, if there is at least one.
7. Compact lines among prose: the `label:entity` lines, when there is at least one.
Anything else is unparseable (None), and so is an answer that was not text at all (a server's
`content` that is null, a number or an object), which engines keep as `not_text(content)`:
`<not text: JSON>`, so that the predictions file holds it and reading it again says the same.

A label is one word (letters, digits, `_`, `-`, CJK included) so that a prose line such as
"以下是识别结果：" is not read as a mention: its "entity" is empty.
"""

from __future__ import annotations

import json
import re

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end|>", "<eos>")
NONE_WORDS = frozenset({"无", "没有", "无实体", "none", "null", "nil", "n/a", "[]", "{}"})
_LABEL_KEYS = ("label", "type")
_TEXT_KEYS = ("text", "entity")

_MENTION_LINE = re.compile(r"^(?:[-*•]\s+|\d{1,3}[.)、]\s*)?([\w-]+)\s*[:：]\s*(.*?)\s*$")
_DECODER = json.JSONDecoder()
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

Mention = tuple[str, str]  # (label, entity text)


NOT_TEXT = "<not text: "


def not_text(value: object) -> str:
    """How an answer that is not text is kept (raw, in the predictions file): never parseable."""
    return f"{NOT_TEXT}{json.dumps(value, ensure_ascii=False)[:200]}>"


def parse_output(raw: str) -> list[Mention] | None:
    """The `(label, entity)` pairs a model's answer names, or None when it cannot be read."""
    if raw.startswith(NOT_TEXT):
        return None
    text = _without_thinking(_cut_at_end_token(raw))
    if text is None:
        return None
    text = _inside_first_fence(text.strip()).strip()
    if _is_none_word(text):
        return []
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    mentions = [_mention_line(line) for line in lines]
    named = [m for m in mentions if m is not None and not _is_json(m[1])]
    if all(m is not None or _is_none_word(line) for m, line in zip(mentions, lines)):
        if any(entity[:1] in ("[", "{") for _, entity in filter(None, mentions)):
            found = _json_mentions(text)
            if found or (found is not None and not named):  # "备注：[]" beside named lines adds nothing
                return found
        if not named and any(_is_json(m[1]) for m in mentions if m is not None):
            return None  # "结果：[1, 2]": JSON, but of no shape that names entities
        return named
    found = _json_mentions(text)
    if found is not None:
        return found
    return named or None


def _without_thinking(text: str) -> str | None:
    """The answer after the think blocks it opens with; None when it ends inside one (the answer
    never came). Only leading blocks are thinking: "<think>" inside an answer is text."""
    while text.lstrip().startswith(THINK_OPEN):
        close = text.find(THINK_CLOSE)
        if close < 0:
            return None
        text = text[close + len(THINK_CLOSE) :]
    return text


def _is_json(entity: str) -> bool:
    """A compact line's "entity" that is a JSON list or object: prose introducing JSON, not a name."""
    if entity[:1] not in ("[", "{"):
        return False
    try:
        return isinstance(json.loads(entity), (list, dict))
    except RecursionError:
        return True
    except json.JSONDecodeError:
        return False
    except ValueError:  # JSON, with an integer longer than Python converts (4,300 digits)
        return True


def _cut_at_end_token(text: str) -> str:
    cut = len(text)
    for token in END_TOKENS:
        index = text.find(token)
        if 0 <= index < cut:
            cut = index
    return text[:cut]


def _inside_first_fence(text: str) -> str:
    lines = text.split("\n")
    opening = next((i for i, line in enumerate(lines) if line.lstrip().startswith("```")), None)
    if opening is None:
        return text
    inside = []
    for line in lines[opening + 1 :]:
        if line.lstrip().startswith("```"):
            break
        inside.append(line)
    # A fence on one line, ```[...]```, holds its content on the fence line itself.
    first = lines[opening].strip().strip("`")
    if not inside and first and not first.isalpha():
        return first
    return "\n".join(inside)


def _is_none_word(text: str) -> bool:
    return text.strip().rstrip("。.!！").strip().lower() in NONE_WORDS


def _mention_line(line: str) -> Mention | None:
    match = _MENTION_LINE.match(line)
    if match is None or not match.group(2):
        return None
    return match.group(1), match.group(2)


def _json_mentions(text: str) -> list[Mention] | None:
    """Rules 5 and 6: the first JSON value of a known shape, or the complete start of a cut list."""
    for start, char in enumerate(text):
        if char not in "[{":
            continue
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except RecursionError:
            return None  # nested deeper than Python's stack: no answer of a known shape
        except json.JSONDecodeError:
            # A list that does not decode may be cut off; its objects must not be read one by one
            # as answers of their own, so the list is tried as a whole first.
            recovered = _truncated_list_mentions(text, start) if char == "[" else []
            if recovered:
                return recovered
            continue
        except ValueError:  # an integer longer than Python converts: no answer of a known shape
            continue
        mentions = mentions_from_json(value)
        if mentions is not None:
            return mentions
    return None


def mentions_from_json(value: object) -> list[Mention] | None:
    """Mentions from a decoded JSON value of a known shape, else None."""
    if isinstance(value, list):
        items = [_mention_object(item) for item in value]
        mentions = [item for item in items if item is not None]
        return mentions if mentions or not value else None
    if not isinstance(value, dict):
        return None
    single = _mention_object(value)
    if single is not None:
        return [single]
    if isinstance(value.get("label"), dict) and isinstance(value.get("text"), str):
        return mentions_from_json(value["label"])  # a whole CLUE record
    mentions: list[Mention] = []
    for label, entities in value.items():
        label = label.strip()
        if isinstance(entities, str):
            entities = [entities]
        if not label or not isinstance(entities, (list, dict)):
            return None
        if isinstance(entities, list) and not all(isinstance(e, str) for e in entities):
            return None
        # A dict is CLUE's {entity: [[start, end], ...]}: its keys are the entities.
        if isinstance(entities, dict) and not all(_is_span_list(spans) for spans in entities.values()):
            return None
        mentions.extend((label, entity.strip()) for entity in entities if isinstance(entity, str) and entity.strip())
    return mentions


def _is_span_list(spans: object) -> bool:
    return isinstance(spans, list) and all(isinstance(span, list) for span in spans)


def _mention_object(item: object) -> Mention | None:
    if not isinstance(item, dict):
        return None
    label = next((item[k] for k in _LABEL_KEYS if isinstance(item.get(k), str)), None)
    entity = next((item[k] for k in _TEXT_KEYS if isinstance(item.get(k), str)), None)
    if label is None or entity is None or not label.strip() or not entity.strip():
        return None
    return label.strip(), entity.strip()


def _truncated_list_mentions(text: str, start: int) -> list[Mention]:
    """The complete `{"label", "text"}` objects of the list opening at `start` that never closes."""
    mentions: list[Mention] = []
    position = start + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] != "{":
            return mentions
        try:
            item, position = _DECODER.raw_decode(text, position)
        except (ValueError, RecursionError):  # JSONDecodeError, or an integer too long to convert
            return mentions
        mention = _mention_object(item)
        if mention is not None:
            mentions.append(mention)
