#!/usr/bin/env bash
# Set up .venv-tl3: tl_multineuron beside SAELens on the TransformerLens 3.x line
# (HookedTransformer), as a SAELens user installs it. Idempotent. Used by test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-tl3/bin/python ]; then
  "$PY" -m venv .venv-tl3
fi
. .venv-tl3/bin/activate
python -m pip install -q --upgrade pip
# the CPU torch wheel first (a bare `torch` requirement could pull a multi-GB CUDA build)
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
# SAELens caps TransformerLens below 4, so pip settles on the 3.x line (HookedTransformer)
python -m pip install -q "sae-lens>=6.54" -e ".[test]"
python -c "import transformer_lens, sae_lens, tl_multineuron; from importlib.metadata import version; print('TL', version('transformer-lens'), '| SAELens', version('sae-lens'))"
