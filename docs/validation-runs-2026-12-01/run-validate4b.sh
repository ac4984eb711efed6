#!/usr/bin/env bash
# Second lane of run-validate4.sh (the sweeps in reverse order; each point's rescan is cached in its
# validation-scan.json, so the first lane reuses what this one finished).
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src4" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
python -m memaudit validate code-nano-s1 records-nano-s1 templates-nano-s1 records-nano synthetic128-micro code-nano \
    --out "$PWD/validation-out-v4b" </dev/null
