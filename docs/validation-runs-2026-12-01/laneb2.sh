#!/usr/bin/env bash
# Session 7: lane b reordered for time — after the V = 4,096 records generalizer, the V = 32
# synthetic points and run9's fresh V = 128 points, then the records memorizers.
cd "$(dirname "$0")"
while [ ! -f records4096-nano-s3/points/n0012903/point.json ]; do sleep 15; done
pkill -f "run8.sh b"; sleep 2; pkill -f "records4096-nano-s3" ; sleep 3
export PYTHONPATH="$PWD/src7" MEMAUDIT_CACHE="$PWD/cache" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NO_COLOR=1
COMMON="--workers 1 --device cpu --recover-n 256 --samples 256 --t0 0.05,0.1,0.25,0.5 --t-profile 0.01,0.05,0.1,0.25 --steps-per-unit 50 --seed 3 --data-seed 3"
echo "=== $(date -Is) start synthetic32-nano-s3"
python -m memaudit sweep --data synthetic --vocab-size 32 --seq-len 32 --preset nano --sizes 8,64,65536 --steps 8:1000,64:2000,65536:3000 $COMMON --out "$PWD/synthetic32-nano-s3" </dev/null
echo "=== $(date -Is) end synthetic32-nano-s3 (exit $?)"
./run9.sh
echo "=== $(date -Is) start records4096-nano-s3 (rest)"
python -m memaudit sweep --data records --vocab-size 4096 --preset nano --sizes 8,32,12903 --steps 8:1000,32:800,12903:1000 $COMMON --out "$PWD/records4096-nano-s3" </dev/null
echo "=== $(date -Is) end records4096-nano-s3 (exit $?)"
