#!/usr/bin/env bash
# Session 6 (issue 12): re-scan every validation point with today's scan (code snapshot ./src4 =
# main with the position-information statistic), so the table holds each point's samples
# (sample_tokens) and the statistic; then `memaudit validate --from-table` re-judges it.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src4" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
python -m memaudit validate templates-nano-long templates-nano templates-nano-s300 code-nano synthetic128-micro \
    records-nano templates-nano-s1 records-nano-s1 code-nano-s1 --out "$PWD/validation-out-v4" </dev/null
