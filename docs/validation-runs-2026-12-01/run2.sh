#!/usr/bin/env bash
# Session 4 (issue 12): the rest of the validation set, in two lanes (two single-threaded
# training processes on the 2 cores). Resumable like run.sh, same code snapshot (./src) and the
# same evaluation settings, so points finished by run.sh are reused.
#   lane A: the templates generalizer trained on to 3000 steps (the issue's failure case; resumed
#           from the 500-step checkpoint copied into templates-nano-long: the learning rate is
#           constant after warm-up, so resuming trains the same schedule), then a V = 128
#           synthetic Markov chain on micro.
#   lane B: the rest of the code sweep, then structured records.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50"
run() {  # name, then sweep options
  local name=$1; shift
  echo "=== $(date -Is) start $name: memaudit sweep $* $COMMON --out $PWD/$name"
  python -m memaudit sweep "$@" $COMMON --out "$PWD/$name" </dev/null
  echo "=== $(date -Is) end $name (exit $?)"
}
lane_a() {
  run templates-nano-long --data templates --vocab-size 512 --preset nano --sizes 12778 --steps 3000
  run synthetic128-micro --data synthetic --vocab-size 128 --seq-len 32 --preset micro --sizes 8,32,128,65536 --steps 8:1000,32:800,128:550,65536:700
}
lane_b() {
  run code-nano    --data code    --vocab-size 2048 --preset nano --sizes 8,32,128,10851 --steps 8:1000,32:800,128:550,10851:500
  run records-nano --data records --vocab-size 1024 --preset nano --sizes 8,32,128,12947 --steps 8:1000,32:800,128:550,12947:1000
}
case "${1:-both}" in
  a) lane_a ;;
  b) lane_b ;;
  both) lane_a > lane-a.log 2>&1 & lane_b > lane-b.log 2>&1 & wait ;;
esac
echo "=== $(date -Is) all done"
