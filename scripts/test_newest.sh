#!/usr/bin/env bash
# Test against the newest releases that pyproject.toml's ranges admit, not the lock: a fresh
# .venv-newest from the open ranges (torch kept at the CPU build), then the fast tier and the
# embedded model's capability checks (prefix cache, cached generation, one-pass vs generation).
# Run it before refreshing the locks (scripts/lock.sh --upgrade). Arguments go to the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-newest
TLMN_VENV=.venv-newest TLMN_OPEN_RANGES=1 bash scripts/bootstrap.sh
export TLMN_OPEN_RANGES=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv-newest/bin/python -c "
from tl_multineuron.backends.versions import drift_line, versions_line
print(versions_line()); print(drift_line() or 'the newest releases are the locked ones')"
.venv-newest/bin/python -m pytest -q -m "not gemma and not smollm2 and not tl3" "$@"
.venv-newest/bin/python -m pytest -q -m gemma \
  -k "prefix_cache or cache_alias or full_pass or cached_generate or greedy_match_equals"
