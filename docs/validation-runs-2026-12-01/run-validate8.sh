#!/usr/bin/env bash
# Session 7 (issue 12): the validation table with the fresh seed-3 points of run8.sh / run9.sh /
# laneb2.sh added (V = 32 and V = 4,096 ends, a code generalizer trained 3,000 steps, a fresh V = 128
# Markov pair), re-scanned with today's scan (code snapshot ./src8 = main at rule v5). Earlier
# points reuse their cached rescans (validation-scan.json).
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src8" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
SWEEPS="templates-nano-long templates-nano templates-nano-s300 code-nano synthetic128-micro records-nano templates-nano-s1 records-nano-s1 code-nano-s1 templates-nano-s2 records-nano-s2 synthetic128-micro-s2"
NEW=""
for s in code-nano-s3 code4096-nano-s3 records4096-nano-s3 synthetic32-nano-s3 synthetic128-micro-s3; do
  [ -d "$s/points" ] && NEW="$NEW $s"
done
python -m memaudit validate $SWEEPS $NEW --out "${1:-$PWD/validation-out-v8}" </dev/null
