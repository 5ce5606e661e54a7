#!/usr/bin/env bash
# Refresh the locks that scripts/bootstrap.sh and scripts/bootstrap_tl3.sh install:
#   src/tl_multineuron/requirements/tl4.lock  (TransformerLens 4.x)
#   src/tl_multineuron/requirements/tl3.lock  (TransformerLens 3.x beside SAELens)
# with pip-tools' pip-compile: it resolves with pip itself, so it sees what pip sees here (the
# CPU torch wheel on this machine's disk), and the lock installs with plain pip. Then run
# `bash scripts/test.sh` in fresh venvs before committing the new locks.
# Usage: bash scripts/lock.sh [--upgrade]   (default: keep locked versions that still fit)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-lock/bin/pip-compile ] || { "$PY" -m venv .venv-lock; .venv-lock/bin/pip install -q "pip-tools==7.6.2"; }
L=src/tl_multineuron/requirements
for line in tl4 tl3; do
  .venv-lock/bin/pip-compile -q "$@" --strip-extras --no-emit-index-url --no-emit-find-links \
    --extra test -o "$L/$line.lock" pyproject.toml "$L/$line.in"
  # the local label of this machine's CPU wheel (2.13.0+cpu) is not on PyPI: lock the version
  sed -i -E 's/^(torch==[0-9.]+)\+cpu/\1/' "$L/$line.lock"
done
echo "locks written: $L/tl4.lock $L/tl3.lock"
