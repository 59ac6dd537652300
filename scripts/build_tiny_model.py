#!/usr/bin/env python
"""Build a random Qwen2 of the tiny family (nerft's own tokenizer) at a chosen size.

For measurements where a forward pass must cost something, e.g. prompt lookup in
docs/PERFORMANCE.md section 7: the quick start's recipe trains it on the sample by heart.

    .venv/bin/python scripts/build_tiny_model.py runs/mid-qwen2 --hidden 512 --layers 8    # 28M parameters
    .venv/bin/nerft train tiny-cpu --set model.model_name_or_path=runs/mid-qwen2 --set train.learning_rate=1e-3 -o runs/mid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the model folder to write")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size, a multiple of 32 (default 512)")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers (default 8)")
    args = parser.parse_args(argv)
    from nerft.models.tiny import build_tiny_qwen2, mid_size

    try:
        size = mid_size(args.hidden, args.layers)
    except ValueError as exc:
        parser.error(str(exc))
    out = build_tiny_qwen2(args.out, size=size)
    config = json.loads((out / "config.json").read_text())
    print(
        f"wrote {out}: hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, vocab {config['vocab_size']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
