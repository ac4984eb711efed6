#!/usr/bin/env bash
# The combined validation table (every point cached by the lanes above): the session-4 sweeps and
# the fresh-seed sweeps, into memaudit/calibration/validation.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src3" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
python -m memaudit validate templates-nano-long templates-nano templates-nano-s300 code-nano synthetic128-micro \
    records-nano templates-nano-s1 records-nano-s1 code-nano-s1 --out "$PWD/validation-out-all" </dev/null
