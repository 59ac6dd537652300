"""The shape of an answer, for engines that can constrain decoding to it (vLLM's structured output).

`seed` answers are a JSON list of `{"label", "text"}` objects: a JSON schema. `compact` answers are
`label:entity` lines or `无`: a regular expression. Either way the label can only be one of the
run's labels, so a constrained model cannot invent one.
"""

from __future__ import annotations

import re

from nerft.prompts import COMPACT_NONE, PromptFormat


def output_json_schema(fmt: PromptFormat) -> dict:
    """JSON schema of a `seed` answer: `[{"label": <one of the labels>, "text": "..."}]`."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": list(fmt.labels)},
                "text": {"type": "string", "minLength": 1},
            },
            "required": ["label", "text"],
            "additionalProperties": False,
        },
    }


def output_regex(fmt: PromptFormat) -> str:
    """Regular expression of a `compact` answer: `无`, or one `label:entity` line per mention."""
    label = "(?:" + "|".join(re.escape(name) for name in fmt.labels) + ")"
    line = f"{label}:[^\\n]+"
    return f"(?:{re.escape(COMPACT_NONE)}|{line}(?:\\n{line})*)"


def output_constraint(fmt: PromptFormat) -> dict:
    """The constraint in the keys vLLM uses (`json` or `regex`), for either prompt format."""
    if fmt.name == "seed":
        return {"json": output_json_schema(fmt)}
    return {"regex": output_regex(fmt)}
