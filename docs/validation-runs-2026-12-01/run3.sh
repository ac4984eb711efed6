#!/usr/bin/env bash
# Session 5 (issue 12): a fresh-seed check of the near-copy evidence (threshold 25 % of tokens,
# chosen after looking at the session-4 validation points): new model seed and new corpus seed,
# the same languages and sizes, with today's scan (code snapshot ./src2 = main at the session-5
# near-copy commit). Two lanes, single-threaded each. Resumable.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src2" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50 --seed 1 --data-seed 1"
run() {
  local name=$1; shift
  echo "=== $(date -Is) start $name: memaudit sweep $* $COMMON --out $PWD/$name"
  python -m memaudit sweep "$@" $COMMON --out "$PWD/$name" </dev/null
  echo "=== $(date -Is) end $name (exit $?)"
}
lane_a() {
  run records-nano-s1 --data records --vocab-size 1024 --preset nano --sizes 32,12947 --steps 32:800,12947:1000
}
lane_b() {
  run templates-nano-s1 --data templates --vocab-size 512 --preset nano --sizes 8,32,12778 --steps 8:300,32:800,12778:500
  run code-nano-s1 --data code --vocab-size 2048 --preset nano --sizes 32 --steps 32:800
}
case "${1:-both}" in
  a) lane_a ;;
  b) lane_b ;;
  both) lane_a > lane3-a.log 2>&1 & lane_b > lane3-b.log 2>&1 & wait ;;
esac
# (added 17:25) with corpus seed 1 the template corpus holds 12,745 blocks, not 12,778: the
# generalizer point is the whole pool at that size
# lane_c: run templates-nano-s1 --data templates --vocab-size 512 --preset nano --sizes 12745 --steps 12745:500
