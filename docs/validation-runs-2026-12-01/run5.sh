#!/usr/bin/env bash
# Session 6 (issue 12): fresh-seed check of the position-information bound (0.1 nats, chosen after
# looking at the 24 validation points): model seed 2, corpus seed 2, partial memorizers (few steps
# on few sequences) and generalizers; code snapshot ./src5 = main at rule v4. Resumable.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src5" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50 --seed 2 --data-seed 2"
run() {
  local name=$1; shift
  echo "=== $(date -Is) start $name: memaudit sweep $* $COMMON --out $PWD/$name"
  python -m memaudit sweep "$@" $COMMON --out "$PWD/$name" </dev/null
  echo "=== $(date -Is) end $name (exit $?)"
}
lane_a() {
  run templates-nano-s2 --data templates --vocab-size 512 --preset nano --sizes 8,32,12000 --steps 8:300,32:500,12000:500
}
lane_b() {
  run records-nano-s2 --data records --vocab-size 1024 --preset nano --sizes 8,32 --steps 8:300,32:500
  run synthetic128-micro-s2 --data synthetic --vocab-size 128 --seq-len 32 --preset micro --sizes 32 --steps 32:500
}
case "${1:-both}" in
  a) lane_a ;;
  b) lane_b ;;
  both) lane_a > lane5-a.log 2>&1 & lane_b > lane5-b.log 2>&1 & wait ;;
esac
