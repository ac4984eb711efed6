#!/usr/bin/env bash
# Session 5: re-scan the session-4 validation sweeps with today's scan (per-sample streams, lean
# reverse steps, near copies), code snapshot ./src3 (main at the merge of issues 14-16). Cached per
# point in validation-scan.json, so a rerun resumes.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src3" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
python -m memaudit validate templates-nano-long templates-nano templates-nano-s300 code-nano synthetic128-micro \
    records-nano "$@" --out "$PWD/validation-out-v3" </dev/null
