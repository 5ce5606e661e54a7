#!/usr/bin/env bash
# Set up and run every test: ruff, then unit, property and integration tests (the embedded Gemma
# model and SmolLM2-135M, the second family). Pass pytest arguments through, e.g.
# `bash scripts/test.sh -m "not gemma and not smollm2"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests examples benchmarks scripts
.venv/bin/ruff format --check src tests examples benchmarks scripts
.venv/bin/python -m pytest -q "$@"
