#!/usr/bin/env bash
# The main job, offline: on the embedded Gemma 3 270M and all 5 built-in tasks, one recording
# pass per task (sharing statistics + contribution/effective attribution + calibration), the
# paper's experiment grid with paired statistics, then one self-contained HTML report.
# Usage: bash scripts/main.sh [--quick] [OUT]   (default OUT: results/grid; --quick: facts only,
# deactivation + amplify x2, a first look in a few minutes). Interrupted? Run it again: it resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
QUICK=()
if [ "${1:-}" = "--quick" ]; then QUICK=(--quick); shift; fi
OUT=${1:-results/grid}
[ ${#QUICK[@]} -gt 0 ] && [ -z "${1:-}" ] && OUT=results/quick
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/tl-multineuron grid "${QUICK[@]}" --out "$OUT" --resume
