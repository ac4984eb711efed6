#!/usr/bin/env bash
# Validation sweeps for issue 12 (docs/validation-plan.md). Resumable: rerun this script and every
# finished point is reused, an unfinished checkpoint resumes. One sweep at a time, one training
# process, single-threaded, at nice 19 (the 2 cores are shared).
# Code: a snapshot of memaudit (git HEAD + the new data sources) in ./src, so edits in the working
# tree during the run cannot change it half-way.
# History: run-1.log — the first schedule (8:300, 32:450), stopped after n = 8 at 300 steps
# proved a partial memorizer; n = 8 now trains 1000 steps (as in calibration), resuming it.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50"
run() {  # name, then sweep options
  local name=$1; shift
  echo "=== $(date -Is) start $name: memaudit sweep $* $COMMON --out $PWD/$name"
  nice -n 19 python -m memaudit sweep "$@" $COMMON --out "$PWD/$name" </dev/null
  echo "=== $(date -Is) end $name (exit $?)"
}
# BPE text, nano, L = 64; the largest size is the whole training pool (data seed 0).
run templates-nano --data templates --vocab-size 512  --preset nano --sizes 8,32,128,12778 --steps 8:1000,32:800,128:550,12778:500
run code-nano      --data code      --vocab-size 2048 --preset nano --sizes 8,32,128,10851 --steps 8:1000,32:800,128:550,10851:500
run records-nano   --data records   --vocab-size 1024 --preset nano --sizes 8,32,128,12947 --steps 8:1000,32:800,128:550,12947:500
# Synthetic Markov chain, V = 128 (calibration: V = 32), L = 32, micro; unlimited supply.
run synthetic128-micro --data synthetic --vocab-size 128 --seq-len 32 --preset micro --sizes 8,32,128,65536 --steps 8:1000,32:800,128:550,65536:700
# The first run's n = 8 templates point at 300 steps (a partial memorizer: train recovery
# 0.68-0.88, test 0.05), kept as an extra validation point; this only rebuilds its table.
run templates-nano-s300 --data templates --vocab-size 512 --preset nano --sizes 8 --steps 300
echo "=== $(date -Is) all done"
