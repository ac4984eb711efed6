#!/usr/bin/env bash
# Session 7 (issue 12): fresh-seed validation points at the vocabulary ends the validation set
# lacked (V = 32 synthetic, V = 4,096 records and code) and a code generalizer trained to the
# calibration's 3,000 steps (the 500-step code point is undertrained). Model seed 3, corpus seed 3;
# trained before the rule of this session was looked at on them. Code snapshot ./src7. Resumable.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src7" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50 --seed 3 --data-seed 3"
run() {
  local name=$1; shift
  echo "=== $(date -Is) start $name: memaudit sweep $* $COMMON --out $PWD/$name"
  python -m memaudit sweep "$@" $COMMON --out "$PWD/$name" </dev/null
  echo "=== $(date -Is) end $name (exit $?)"
}
lane_a() {
  run code-nano-s3 --data code --vocab-size 2048 --preset nano --sizes 8,10851 --steps 8:1000,10851:3000
  run code4096-nano-s3 --data code --vocab-size 4096 --preset nano --sizes 32 --steps 32:800
}
lane_b() {
  run records4096-nano-s3 --data records --vocab-size 4096 --preset nano --sizes 8,32,12903 --steps 8:1000,32:800,12903:1000
  run synthetic32-nano-s3 --data synthetic --vocab-size 32 --seq-len 32 --preset nano --sizes 8,64,65536 --steps 8:1000,64:2000,65536:3000
}
case "${1:-both}" in
  a) lane_a ;;
  b) lane_b ;;
  both) lane_a > lane8-a.log 2>&1 & lane_b > lane8-b.log 2>&1 & wait ;;
esac
