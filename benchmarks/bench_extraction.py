"""Benchmark of the training-copy index (memaudit.extraction): build it over a large training set
and match generated samples against it.

    python benchmarks/bench_extraction.py                        # 10^6 sequences × 64 tokens, 256 samples
    python benchmarks/bench_extraction.py --docs 100000 --length 128 --samples 1024

The training set is uniform random token ids (V = 50257, GPT-2's vocabulary size); a quarter of the
samples are planted near copies (0 … ⌊0.1·L⌋ substitutions of a window at a random offset of the
packed stream, so most cross an example boundary), the rest random. It prints the time to build the
index (hashing and sorting every n-gram), the time to match, the peak resident memory, and whether
every planted copy was found at its position with its distance (the guarantee of the module
docstring). Not a test: it prints figures (docs/performance.md records them).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from memaudit.extraction import TrainingIndex, near_copy_distance, ngram_size  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    length = args.length
    docs = rng.integers(0, args.vocab, size=(args.docs, length), dtype=np.int64)
    stream = docs.reshape(-1)
    near = near_copy_distance(length)
    planted = args.samples // 4
    samples = rng.integers(0, args.vocab, size=(args.samples, length), dtype=np.int64)
    starts = rng.integers(0, stream.size - length, size=planted)
    subs = np.arange(planted) % (near + 1)
    for j in range(planted):
        window = stream[starts[j]:starts[j] + length].copy()
        where = rng.choice(length, size=subs[j], replace=False)
        window[where] = (window[where] + 1 + rng.integers(0, args.vocab - 1, size=subs[j])) % args.vocab
        samples[j] = window

    t0 = time.perf_counter()
    index = TrainingIndex.build(docs, ngram_size(length))
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = index.match(samples)
    match_s = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    position = m.nearest_train_id[:planted] * length + m.nearest_train_offset[:planted]
    found = (m.is_near_copy[:planted] & (position == starts) & (m.nearest_train_distance[:planted] == subs)).all()
    false_near = int(m.is_near_copy[planted:].sum())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"training set: {args.docs:,} sequences × {length} tokens = {stream.size:,} tokens (V = {args.vocab}); "
          f"n-gram n = {index.n}; near copy: ≤ {near} tokens differ")
    print(f"build index (hash + sort {index.keys.size:,} n-grams): {build_s:.1f} s")
    print(f"match {args.samples} samples: {match_s:.2f} s ({1e3 * match_s / args.samples:.2f} ms per sample)")
    print(f"peak resident memory: {peak_gib:.2f} GiB")
    print(f"planted near copies ({planted}, 0…{near} substitutions) found at their offset and distance: {found}; "
          f"random samples called near copies: {false_near}")
    return 0 if found and false_near == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
