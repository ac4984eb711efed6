"""Train and scan throughput against the torch thread count, per model size (prints a Markdown
table; not a test). The figures and the default they support are in docs/performance.md.

    python benchmarks/bench_threads.py [--presets nano] [--threads 1,2] [--repeats 2]

Runs alternate between thread counts (1, 2, 1, 2, …) so that a change in the machine's load hits
both alike; each cell is the median over the repeats. Train: `memaudit.train` on the synthetic
language (batch 64 × L 32), tokens/s. Scan: `memaudit.scan` of an untrained network of the preset
(V 32, L 32) with a fixed sample count, no adaptive stop, samples/s.
"""
import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from memaudit.denoiser import Denoiser
from memaudit.diffusion import LogLinearSchedule
from memaudit.model import DDiT, preset_config
from memaudit.probe import scan
from memaudit.train import TrainConfig, train


def train_rate(preset: str, steps: int) -> float:
    cfg = TrainConfig(preset=preset, steps=steps, batch_size=64, checkpoint_every=10**9, warmup=10)
    with tempfile.TemporaryDirectory() as tmp:
        return train(cfg, f"{tmp}/run", show_progress=False).tokens_per_second


def scan_rate(preset: str, samples: int, steps: int) -> float:
    torch.manual_seed(0)
    model = DDiT(preset_config(preset, vocab_size=32, seq_len=32))
    denoiser = Denoiser(model=model, schedule=LogLinearSchedule(), vocab_size=32, seq_len=32)
    started = time.perf_counter()
    scan(denoiser, samples=samples, steps=steps, adaptive=False, show_progress=False, bootstrap_resamples=50)
    return samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="nano")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--scan-samples", type=int, default=32)
    parser.add_argument("--scan-steps", type=int, default=32)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}")
    print("| preset | parameters | threads | train tokens/s | scan samples/s |")
    print("| --- | --- | --- | --- | --- |")
    for preset in args.presets.split(","):
        n_params = sum(p.numel() for p in DDiT(preset_config(preset, vocab_size=32, seq_len=32)).parameters())
        rates = {t: {"train": [], "scan": []} for t in counts}
        for _ in range(args.repeats):
            for t in counts:
                torch.set_num_threads(t)
                rates[t]["train"].append(train_rate(preset, args.train_steps))
                rates[t]["scan"].append(scan_rate(preset, args.scan_samples, args.scan_steps))
        for t in counts:
            print(f"| {preset} | {n_params:,} | {t} | {statistics.median(rates[t]['train']):,.0f} | "
                  f"{statistics.median(rates[t]['scan']):,.2f} |", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the end {load:.1f}")


if __name__ == "__main__":
    main()
