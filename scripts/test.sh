#!/usr/bin/env bash
# Set up and run every test on both TransformerLens lines:
#   1. .venv (TL 4.x, TransformerBridge): ruff, then unit, property and integration tests (the
#      embedded Gemma model and SmolLM2-135M, the second family);
#   2. .venv-tl3 (TL 3.x HookedTransformer beside SAELens): the integration tests, the SAE-site
#      tests and the cross-line agreement with .venv.
# Arguments go to the first pytest run only and skip the second, e.g.
# `bash scripts/test.sh -m "not gemma and not smollm2"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests examples benchmarks scripts
.venv/bin/ruff format --check src tests examples benchmarks scripts
.venv/bin/python -m pytest -q "$@"
if [ "$#" -eq 0 ]; then
  bash scripts/bootstrap_tl3.sh
  TLMN_TL4_PYTHON="$PWD/.venv/bin/python" .venv-tl3/bin/python -m pytest -q \
    -m "gemma or smollm2 or tl3"
fi
