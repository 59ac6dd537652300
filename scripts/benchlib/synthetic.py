"""Large CLUE NER files made from real records, to see how a reader's memory grows with the file.

Record `i` is base record `i mod n` with `（i）` appended to its text: every text is distinct, the
entity spans stay where they were (the suffix comes after them), so every record stays valid and
the label mix is the base file's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from nerft.io import write_jsonl_atomic


def synthetic_records(base: Sequence[dict], count: int) -> Iterator[dict]:
    """`count` CLUE NER rows (`{"text", "label"}`) cycling through `base`, each text made unique."""
    if not base:
        raise ValueError("synthetic_records needs at least one base record")
    for index in range(count):
        row = base[index % len(base)]
        yield {**row, "text": f"{row['text']}（{index}）"}


def write_synthetic_cluener(path: str | os.PathLike, base: Sequence[dict], count: int) -> Path:
    write_jsonl_atomic(path, synthetic_records(base, count))
    return Path(path)
