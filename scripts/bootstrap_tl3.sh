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
python -m pip install -q "pip==26.3"
# The tested versions, exactly (src/tl_multineuron/requirements/tl3.lock, from scripts/lock.sh):
# SAELens caps TransformerLens below 4, so the lock holds the 3.x line (HookedTransformer).
python -m pip install -q --no-compile -r src/tl_multineuron/requirements/tl3.lock
python -m pip install -q --no-compile --no-deps -e .
python -c "import transformer_lens, sae_lens, tl_multineuron; from importlib.metadata import version; print('TL', version('transformer-lens'), '| SAELens', version('sae-lens'))"
