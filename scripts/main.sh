#!/usr/bin/env bash
# The main job, offline: sharing analysis of a built-in task on the embedded Gemma 3 270M,
# attribution joined with the categories, then a self-contained HTML report.
# Usage: bash scripts/main.sh [TASK] [OUT]     (defaults: facts, results/facts)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
TASK=${1:-facts}
OUT=${2:-results/$TASK}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TLM=.venv/bin/tl-multineuron
$TLM analyze --task "$TASK" --threshold 0,0.1,0.2,0.3,0.4,0.5 --out "$OUT" --resume
$TLM attribute --task "$TASK" --method contribution,effective --k 50 --out "$OUT" --resume
$TLM report "$OUT"
