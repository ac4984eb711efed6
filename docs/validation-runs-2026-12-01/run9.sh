#!/usr/bin/env bash
# Session 7 (issue 12): an out-of-sample check of rule v5's position clearance — a fresh-seed
# (model and corpus seed 3) V = 128 Markov generalizer and transition point, the configuration of
# the one validation point (seed 0) that motivated it. Code snapshot ./src7. Resumable.
set -u
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/src7" MEMAUDIT_CACHE="$PWD/cache"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50 --seed 3 --data-seed 3"
echo "=== $(date -Is) start synthetic128-micro-s3"
python -m memaudit sweep --data synthetic --vocab-size 128 --seq-len 32 --preset micro --sizes 128,65536 --steps 128:550,65536:700 $COMMON --out "$PWD/synthetic128-micro-s3" </dev/null
echo "=== $(date -Is) end synthetic128-micro-s3 (exit $?)"
