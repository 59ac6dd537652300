#!/usr/bin/env bash
# One-command setup: creates .venv/ at the repository root with nerft (editable) and its test tools.
# Re-running it updates the environment in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "nerft needs Python >= 3.10" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c 'import torch, torchvision, torchaudio, llamafactory' \
  || { echo "torch / torchvision / torchaudio / llamafactory do not import together: see 'nerft doctor'" >&2; exit 1; }
echo "nerft is installed in .venv: run .venv/bin/nerft --help"
