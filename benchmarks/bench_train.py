"""Training throughput of the reference trainer (prints figures; not a test).

    python benchmarks/bench_train.py [--preset nano] [--steps 200] [--threads 1,2]

Prints tokens/s and seconds/step per thread count, and the projected wall time of the reference
runs (memaudit.reference) on this machine. Results are recorded in benchmarks/RESULTS.md.
"""
import argparse
import platform
import tempfile
import time

import torch

from memaudit.reference import REFERENCE_RUNS
from memaudit.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads available")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        cfg = TrainConfig(preset=args.preset, steps=args.steps, batch_size=args.batch_size,
                          checkpoint_every=10**9, warmup=10)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = train(cfg, f"{tmp}/run", show_progress=False)
            wall = time.perf_counter() - start
        per_step = result.wall_seconds / result.steps_done
        print(f"{args.preset} batch {args.batch_size} × L 32, {threads} thread(s): "
              f"{result.tokens_per_second:,.0f} tokens/s, {per_step * 1000:.1f} ms/step, "
              f"{wall:.1f} s for {result.steps_done} steps incl. data and checkpoint")
        for name, ref in REFERENCE_RUNS.items():
            print(f"  projected reference run '{name}' ({ref.steps} steps, batch {ref.batch_size}): "
                  f"{per_step * ref.steps * ref.batch_size / args.batch_size / 60:.1f} min")


if __name__ == "__main__":
    main()
