"""Power of the scan's stored-set evidence (issue 12): how many samples detect memorization of n
training sequences at the rule's settings.

    python benchmarks/coincidence_power.py [--reps 2000] [--table memaudit/calibration/calibration_table.parquet]

1. Repeats (rule: ≥ evidence.min_colliding_pairs identical pairs among N samples). A memorizer that
   draws its samples from n stored sequences makes about C(N, 2)/n identical pairs. Printed: the
   detection probability at N = 64 … 4096 for n = 8 … 262,144, exactly by simulation (multinomial
   draws, uniform over the n sequences, and Zipf-weighted — real memorizers favour some sequences,
   which only adds pairs), beside the Poisson approximation; and the N needed for 95 % detection.
2. Attractors (rule: Wilson lower bound of the whole-return share > evidence.basin_return_min). The
   N at which a memorizer whose samples return whole with probability p is detected 95 % of the time.
3. The stored memorizers of the calibration table: the share of random subsets of N of their
   samples that show ≥ min_colliding_pairs pairs (their real, non-uniform sample distribution).

Figures are recorded in docs/calibration.md (power). No timing is involved; the output depends only
on the seed.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from memaudit.stats import poisson_cdf, wilson_interval
from memaudit.verdict import load_rule

SAMPLE_COUNTS = (64, 128, 256, 512, 1024, 2048, 4096)
SET_SIZES = (8, 64, 512, 4096, 32768, 262144)


def pairs_of(draws: np.ndarray) -> int:
    counts = np.bincount(draws)
    return int((counts * (counts - 1) // 2).sum())


def simulated_power(n_set: int, n_samples: int, min_pairs: int, reps: int, rng, zipf: bool = False) -> float:
    if zipf:
        w = 1.0 / np.arange(1, n_set + 1)
        p = w / w.sum()
    hits = 0
    for _ in range(reps):
        draws = rng.choice(n_set, size=n_samples, p=p) if zipf else rng.integers(0, n_set, size=n_samples)
        hits += pairs_of(draws) >= min_pairs
    return hits / reps


def poisson_power(n_set: int, n_samples: int, min_pairs: int) -> float:
    lam = n_samples * (n_samples - 1) / 2 / n_set
    return 1.0 - poisson_cdf(min_pairs - 1, lam)


def samples_for_power(n_set: int, min_pairs: int, power: float = 0.95) -> int:
    lo, hi = 2, 1 << 24
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if poisson_power(n_set, mid, min_pairs) < power else (lo, mid)
    return lo


def basin_samples_for_power(p: float, threshold: float, confidence: float, power: float, reps: int, rng) -> int | None:
    for n in (8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096):
        k = rng.binomial(n, p, size=reps)
        detected = np.mean([wilson_interval(int(x), n, confidence)[0] > threshold for x in k])
        if detected >= power:
            return n
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", type=Path, default=Path("memaudit/calibration/calibration_table.parquet"))
    args = ap.parse_args()
    rule = load_rule()
    min_pairs = int(rule.evidence["min_colliding_pairs"])
    rng = np.random.default_rng(args.seed)
    print(f"rule {rule.name} v{rule.version}: repeats = at least {min_pairs} identical pairs; attractors = Wilson "
          f"{rule.confidence:.0%} lower bound of the whole-return share > {rule.evidence['basin_return_min']:g}")
    print(f"\n1. P(detect repeats) — simulated uniform / simulated Zipf / Poisson, {args.reps} draws each")
    print("n stored \\ N | " + " | ".join(f"{n:>5}" for n in SAMPLE_COUNTS) + " | N for 95 % (Poisson)")
    for n_set in SET_SIZES:
        cells = []
        for n in SAMPLE_COUNTS:
            u = simulated_power(n_set, n, min_pairs, args.reps, rng)
            z = simulated_power(n_set, n, min_pairs, max(200, args.reps // 10), rng, zipf=True)
            cells.append(f"{u:.2f}/{z:.2f}/{poisson_power(n_set, n, min_pairs):.2f}")
        print(f"{n_set:>12,} | " + " | ".join(cells) + f" | {samples_for_power(n_set, min_pairs):,}")
    print(f"\n2. Samples for 95 % detection of attractors (share p of samples returning whole)")
    for p in (0.55, 0.6, 0.7, 0.8, 0.9, 0.99):
        n = basin_samples_for_power(p, rule.evidence["basin_return_min"], rule.confidence, 0.95, args.reps, rng)
        print(f"p = {p:.2f}: N = {n if n is not None else '> 4096'}")
    if args.table.is_file():
        import pyarrow.parquet as pq

        rows = pq.read_table(args.table).to_pylist()
        print(f"\n3. Stored memorizers of {args.table}: share of random N-subsets with ≥ {min_pairs} pairs")
        for r in rows:
            if r["label"] != "memorizing":
                continue
            dup = np.asarray(r["duplicate_of"])
            group = np.where(dup >= 0, dup, np.arange(dup.size))
            cells = []
            for n in (32, 64, 128, 256):
                if n > dup.size:
                    continue
                hits = sum(pairs_of(group[rng.permutation(dup.size)[:n]]) >= min_pairs for _ in range(200))
                cells.append(f"N={n}: {hits / 200:.2f}")
            print(f"{r['data']}·{r['preset']} n={r['n_train']}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
