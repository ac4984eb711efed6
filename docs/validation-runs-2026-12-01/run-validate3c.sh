#!/usr/bin/env bash
# The fresh-seed sweeps of run3.sh, re-scanned like the others (same per-point cache).
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src3" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
python -m memaudit validate templates-nano-s1 records-nano-s1 "$@" --out "$PWD/validation-out-v3c" </dev/null
