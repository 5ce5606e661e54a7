#!/usr/bin/env bash
# The main job, offline: `tl-multineuron paper` on the embedded Gemma 3 270M and all 5 built-in
# tasks: one recording pass per task (sharing statistics with per-item summaries, contribution /
# effective attribution, calibration), the experiment grid (every category deactivated against
# equal-size and activity-matched controls, amplify x2) with paired statistics, every claim of
# the paper with its statistic (OUT/paper/), then one self-contained HTML report.
# Usage: bash scripts/main.sh [--quick] [OUT]   (default OUT: results/paper; --quick: facts only,
# a first look in a few minutes). Interrupted? Run it again: it resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
QUICK=()
if [ "${1:-}" = "--quick" ]; then QUICK=(--quick); shift; fi
OUT=${1:-results/paper}
[ ${#QUICK[@]} -gt 0 ] && [ -z "${1:-}" ] && OUT=results/quick
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/tl-multineuron paper "${QUICK[@]}" --out "$OUT" --resume
