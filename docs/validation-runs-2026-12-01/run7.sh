#!/usr/bin/env bash
# Session 7 (issue 12): re-train the calibration table's three partial memorizers (the points the
# fixed-point distance bound holds at inconclusive) with the calibration's own settings, to measure
# their position information (the calibration table has no sample tokens). Code snapshot ./src7.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src7" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --steps-per-unit 100 --seed 0"
run() {
  local name=$1; shift
  echo "=== $(date -Is) start $name: memaudit sweep $* $COMMON --out $PWD/$name"
  python -m memaudit sweep "$@" $COMMON --out "$PWD/$name" </dev/null
  echo "=== $(date -Is) end $name (exit $?)"
}
lane_a() {
  run cal-synthetic-nano --data synthetic --preset nano --sizes 64 --steps 64:2000
  run cal-stdlib-nano --data stdlib --preset nano --sizes 128 --steps 128:2500
}
lane_b() {
  run cal-synthetic-micro --data synthetic --preset micro --sizes 64 --steps 64:2000
}
case "${1:-both}" in
  a) lane_a ;;
  b) lane_b ;;
  both) lane_a > lane7-a.log 2>&1 & lane_b > lane7-b.log 2>&1 & wait ;;
esac
