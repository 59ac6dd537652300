#!/usr/bin/env bash
# One-command setup: creates .venv/ at the repository root with nerft (editable) and its test tools.
# Re-running it updates the environment in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "nerft needs Python >= 3.10" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,ray]"  # ray: `nerft predict --ray` and its loopback-cluster tests
.venv/bin/python -c 'import torch, torchvision, torchaudio, llamafactory' \
  || { echo "torch / torchvision / torchaudio / llamafactory do not import together: see 'nerft doctor'" >&2; exit 1; }
# Label Studio, for the annotation round-trip test (tests/test_label_studio.py), in its own venv:
# its Django stack must not touch nerft's pins. NERFT_SKIP_LABEL_STUDIO=1 skips it.
if [ -z "${NERFT_SKIP_LABEL_STUDIO:-}" ]; then
  [ -x .venv-labelstudio/bin/python ] || "$PYTHON" -m venv .venv-labelstudio
  .venv-labelstudio/bin/python -m pip install --quiet --upgrade pip
  .venv-labelstudio/bin/python -m pip install --quiet "label-studio==1.23.2"
fi
# Headless Chromium (and a font with Chinese glyphs) for the browser tests of errors.html and
# `nerft demo` (Debian/Ubuntu, as root).
if [ -z "${NERFT_SKIP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei
fi
echo "nerft is installed in .venv: run .venv/bin/nerft --help"
