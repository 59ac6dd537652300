"""Property-based tests of the readers and converters: any valid records survive every input shape.

Records are generated with non-overlapping spans over a small alphabet (no whitespace, so no
entity has outer whitespace); each is written as JSON Lines, a pretty-printed JSON array,
concatenated pretty-printed objects with a BOM, and char-level BIO and BMES, then read back with
`load_records`. What comes back must be the same texts and entities, in the same order.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from nerft.data.load import load_records
from nerft.prompts import CLUENER_LABELS

ALPHABET = "张三李四北京上海浙商银行大学的在了是公司，。《》1"


@st.composite
def records(draw):
    text = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=24))
    # cut the text into pieces; some pieces become entities (so spans never overlap)
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=6))) if len(text) > 1 else []
    bounds = list(zip([0, *cuts], [*cuts, len(text)]))
    spans = [(start, end - 1, draw(st.sampled_from(CLUENER_LABELS))) for start, end in bounds if draw(st.booleans())]
    return text, spans


def clue_object(text, spans) -> dict:
    label: dict = {}
    for start, end, name in spans:
        label.setdefault(name, {}).setdefault(text[start : end + 1], []).append([start, end])
    return {"text": text, "label": label}


def tagged(text, spans, scheme: str) -> str:
    tags = ["O"] * len(text)
    for start, end, name in spans:
        for index in range(start, end + 1):
            if scheme == "bio":
                tags[index] = f"{'B' if index == start else 'I'}-{name}"
            elif start == end:
                tags[index] = f"S-{name}"
            else:
                tags[index] = f"{'B' if index == start else 'E' if index == end else 'M'}-{name}"
    return "".join(f"{char} {tag}\n" for char, tag in zip(text, tags))


def read_back(path) -> list:
    return [(r.text, [(e.start, e.end, e.label, e.text) for e in r.entities]) for r in load_records(path)]


def expected(batch) -> list:
    return [(text, [(s, e, name, text[s : e + 1]) for s, e, name in sorted(spans)]) for text, spans in batch]


batches = st.lists(records(), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(batches, st.sampled_from(["jsonl", "array", "concatenated"]))
def test_every_json_shape_reads_back_the_same_records(tmp_path_factory, batch, shape):
    path = tmp_path_factory.mktemp("json") / "records.json"
    objects = [clue_object(text, spans) for text, spans in batch]
    if shape == "jsonl":
        path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8")
    elif shape == "array":
        path.write_text(json.dumps(objects, ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        path.write_text("\n".join(json.dumps(o, ensure_ascii=False, indent=4) for o in objects), encoding="utf-8-sig")
    assert read_back(path) == expected(batch)


@settings(max_examples=150, deadline=None)
@given(batches, st.sampled_from(["bio", "bmes"]))
def test_char_tagged_files_read_back_the_same_records(tmp_path_factory, batch, scheme):
    path = tmp_path_factory.mktemp("tagged") / f"records.{scheme}"
    path.write_text("\n".join(tagged(text, spans, scheme) for text, spans in batch), encoding="utf-8")
    assert read_back(path) == expected(batch)
