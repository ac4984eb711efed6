#!/usr/bin/env bash
# Session 6 (issue 12): the combined validation table — the 24 points of run-validate4.sh and the
# fresh-seed (seed 2) sweeps of run5.sh, re-scanned with today's scan (code snapshot ./src6 = main
# at rule v4 with --precision). Lane b scans the sweeps in reverse order first; the points' rescans
# are cached in their validation-scan.json, so lane a reuses them.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src6" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
SWEEPS="templates-nano-long templates-nano templates-nano-s300 code-nano synthetic128-micro records-nano templates-nano-s1 records-nano-s1 code-nano-s1 templates-nano-s2 records-nano-s2 synthetic128-micro-s2"
REVERSED=$(echo $SWEEPS | tr ' ' '\n' | tac | tr '\n' ' ')
case "${1:-both}" in
  a) python -m memaudit validate $SWEEPS --out "$PWD/validation-out-v6" </dev/null ;;
  b) python -m memaudit validate $REVERSED --out "$PWD/validation-out-v6b" </dev/null ;;
  both) "$0" b > validate6b.log 2>&1 & sleep 5; "$0" a > validate6.log 2>&1; wait ;;
esac
