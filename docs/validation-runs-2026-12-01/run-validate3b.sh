#!/usr/bin/env bash
# The second lane of run-validate3.sh (the same per-point cache; its own output folder).
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src3" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
python -m memaudit validate records-nano synthetic128-micro code-nano --out "$PWD/validation-out-v3b" </dev/null
