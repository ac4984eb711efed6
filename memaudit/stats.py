"""Statistics: the seeded percentile bootstrap and the scan statistics a rule reads.

One implementation each, shared by the scan (memaudit.probe), token recovery
(memaudit.recovery), the sweep's re-judging of stored points (memaudit.experiments.tables) and
the fitting of the rule (memaudit.verdict.fit):

    derive_seed(seed, *stream)          a 63-bit seed for one named random stream of a run
    resampled_means(columns, B, rng)    means of per-sample columns over B bootstrap resamples,
                                        one shared set of resampled indices for every column
    percentile_interval(values, conf)   the central percentile interval of resampled values
    bootstrap_ci / bootstrap_mean_ci /  percentile-bootstrap CIs: of several per-sample means
    bootstrap_gap_ci                    (shared indices); of one NaN-skipping mean; of the
                                        difference of two means, resampled independently
    scan_statistics(...)                every statistic memaudit.verdict.Evidence reads, from
                                        per-sample arrays
    position_information(tokens, seed)  how much a sample's tokens depend on their position (nats),
                                        with a shift-permutation p-value
    record_statistics(record, ...)      the same from the stored per-sample arrays of a point (a
                                        calibration-table row, or
                                        memaudit.experiments.tables.point_record)

Everything is float64 and a pure function of its inputs and seeds: the generator is PCG64 seeded
with the stream's seed, and resampled indices are drawn in chunks of at most 2^22 (the draws do
not depend on the chunking), so reports are byte-identical between runs.
"""
from __future__ import annotations

import functools
import hashlib
import math
from statistics import NormalDist
from typing import Any

import numpy as np

CHUNK_ELEMENTS = 1 << 22    # resampled indices held in memory at once


def derive_seed(seed: int, *stream: Any) -> int:
    """A 63-bit seed for one named random stream of a run (sampling, corruption, bootstrap …)."""
    blob = repr((int(seed),) + tuple(stream)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def generator(seed: int) -> np.random.Generator:
    """The bootstrap's random generator for one stream seed."""
    return np.random.Generator(np.random.PCG64(seed))


# ------------------------------------------------------------------------------------- bootstrap
def resampled_means(columns: dict[str, np.ndarray], resamples: int, rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
    """The mean of each column (equal lengths n ≥ 1) over `resamples` resamples of its n rows,
    drawn with replacement; one shared set of indices serves every column. → {name: [resamples]}."""
    values = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    n = len(next(iter(values.values())))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in values}
    chunk = max(1, min(resamples, CHUNK_ELEMENTS // max(1, n)))
    done = 0
    while done < resamples:
        m = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        for k, v in values.items():
            parts[k].append(v[idx].mean(axis=1))
        done += m
    return {k: np.concatenate(p) for k, p in parts.items()}


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of resampled values (percentile method)."""
    q = (1 - confidence) / 2
    return (float(np.quantile(values, q)), float(np.quantile(values, 1 - q)))


def bootstrap_ci(per_sample: dict[str, np.ndarray], resamples: int, confidence: float,
                 seed: int) -> dict[str, list[float]]:
    """Percentile-bootstrap CI of the mean of each per-sample statistic, all from one seeded set
    of resampled indices. seed: the stream's seed (e.g. derive_seed(scan_seed, 'bootstrap')).
    → {name: [lo, hi]}."""
    means = resampled_means(per_sample, resamples, generator(seed))
    return {k: list(percentile_interval(v, confidence)) for k, v in means.items()}


def finite_values(values) -> np.ndarray:
    """The non-NaN entries, as float64."""
    values = np.asarray(values, dtype=np.float64)
    return values[~np.isnan(values)]


def nan_mean(values) -> float:
    """The NaN-skipping mean; NaN without valid values."""
    v = finite_values(values)
    return float(v.mean()) if v.size else math.nan


def bootstrap_mean_ci(values, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile-bootstrap CI of the NaN-skipping mean. (NaN, NaN) without valid values."""
    v = finite_values(values)
    if v.size == 0:
        return (math.nan, math.nan)
    means = resampled_means({"v": v}, resamples, generator(seed))["v"]
    return percentile_interval(means, confidence)


def bootstrap_gap_ci(a, b, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """CI of mean(a) − mean(b), NaN-skipping, the two samples resampled independently (a's
    indices drawn first, then b's, from one generator)."""
    va, vb = finite_values(a), finite_values(b)
    if va.size == 0 or vb.size == 0:
        return (math.nan, math.nan)
    rng = generator(seed)
    mean_a = resampled_means({"v": va}, resamples, rng)["v"]
    mean_b = resampled_means({"v": vb}, resamples, rng)["v"]
    return percentile_interval(mean_a - mean_b, confidence)


# --------------------------------------------------------------------------------- coincidences
def poisson_cdf(k: int, lam: float) -> float:
    """P(X ≤ k) for X ~ Poisson(λ), summed in log space."""
    if lam <= 0:
        return 1.0
    terms = [i * math.log(lam) - lam - math.lgamma(i + 1) for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


@functools.lru_cache(maxsize=4096)   # a pure function, called with the same few counts by every bootstrap and fit
def poisson_interval(k: int, confidence: float) -> tuple[float, float]:
    """Garwood's exact two-sided interval for the mean λ of a Poisson count k: λ_lo with
    P(X ≥ k | λ_lo) = α/2, λ_hi with P(X ≤ k | λ_hi) = α/2 (bisection; above k = 1000 the
    Wilson–Hilferty form of the same χ² quantiles, which is exact to 1e-4 there)."""
    a = (1 - confidence) / 2
    if k > 1000:
        z = NormalDist().inv_cdf(1 - a)

        def chi2(sign: float, dof: float) -> float:
            c = 2 / (9 * dof)
            return dof * (1 - c + sign * z * math.sqrt(c)) ** 3

        return chi2(-1, 2 * k) / 2, chi2(1, 2 * k + 2) / 2

    def solve(f, lo: float, hi: float) -> float:   # f decreasing in λ, root of f(λ) = a
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > a else (lo, mid)
        return (lo + hi) / 2

    top = k + 20 * math.sqrt(k + 1) + 20
    lower = 0.0 if k == 0 else solve(lambda lam: poisson_cdf(k - 1, lam) - 1 + 2 * a, 0.0, top)
    upper = solve(lambda lam: poisson_cdf(k, lam), 0.0, top)
    return lower, upper


def coincidences(duplicate_of, confidence: float) -> dict:
    """Exact coincidences among N samples and the capture–recapture (birthday) estimate of how
    many distinct sequences the model draws from.

    duplicate_of [N]: index of the first equal sample, −1 for none. A model that draws uniformly
    from n sequences makes about C(N, 2) / n colliding pairs; in general the pair count estimates
    C(N, 2) Σ p², and 1 / Σ p² ≤ the number of sequences with non-zero probability. The count is
    treated as Poisson (the birthday approximation), so `distinct_sequences_ci[0]` is a lower
    confidence bound on the number of sequences the model produces, and `[1]` (None without
    coincidences: unbounded) an upper bound on the effective size of the set it draws from."""
    dup = np.asarray(duplicate_of, dtype=np.int64)
    n = int(dup.size)
    group = np.where(dup >= 0, dup, np.arange(n))
    sizes = np.bincount(group, minlength=max(n, 1))
    pairs = int((sizes * (sizes - 1) // 2).sum())
    all_pairs = n * (n - 1) // 2
    lo, hi = poisson_interval(pairs, confidence)
    return {
        "colliding_pairs": pairs,
        "sample_pairs": all_pairs,
        "distinct_samples": int((sizes > 0).sum()),
        "distinct_sequences_estimate": all_pairs / pairs if pairs else None,
        "distinct_sequences_ci": [all_pairs / hi if all_pairs else None, all_pairs / lo if lo > 0 else None],
    }


# ------------------------------------------------------------------------------- scan statistics
def scan_statistics(sample_mean_entropy, duplicate_of, is_fixed_point, fixed_point_distance, *,
                    vocab_size: int, tau: float, t_eval: float, seed: int, resamples: int,
                    confidence: float, sample_low_entropy_fraction=None, basin_agreement=None,
                    seq_len: int | None = None, near_earlier=None, near_fraction: float | None = None,
                    tokens=None, layout: str | None = None) -> dict:
    """The statistics a scan rule reads (memaudit.verdict.Evidence), from per-sample arrays [N]:
    each sample's mean entropy H̄_i (nats) at t_eval, the index of the first earlier sample it
    equals (−1: none), whether it is a fixed point of the greedy dynamics and the share of its
    tokens that the dynamics changes, optionally its share of tokens with entropy below τ and the
    share of its tokens that come back after re-noising at the basin time (stored points that
    lack them get NaN).

    CIs are percentile-bootstrap intervals over samples from the stream derive_seed(seed,
    'bootstrap'), so at a scan's own settings these are the scan's numbers; the basin-return CI
    is Wilson's score interval, the coincidence CI the Poisson one (`coincidences`). near_earlier
    [N]: how many earlier samples each one differs from in at most near_fraction of its tokens
    (memaudit.probe.near_copies); its sum is `near_pairs` (None where it was not measured).
    tokens [N, L]: the samples themselves, for `position_information` (NaN without them); layout:
    how the model's training sequences were cut ('stream', 'aligned' or 'unknown', recorded for the
    rule)."""
    h = np.asarray(sample_mean_entropy, dtype=np.float64)
    duplicate_of = np.asarray(duplicate_of, dtype=np.int64)
    is_duplicate = duplicate_of >= 0
    near = (h < tau).astype(np.float64)                   # samples whose mean entropy is below τ
    low = None if sample_low_entropy_fraction is None else np.asarray(sample_low_entropy_fraction, dtype=np.float64)
    per_sample = {"mean_entropy": h, "near_zero_sample_fraction": near}
    if low is not None:
        per_sample["low_entropy_fraction"] = low
    ci = bootstrap_ci(per_sample, resamples, confidence, derive_seed(seed, "bootstrap"))
    max_h = math.log(int(vocab_size))
    mean_h = float(h.mean())
    return {
        "n_samples": int(h.size),
        "vocab_size": int(vocab_size),
        "mean_entropy": mean_h,
        "mean_entropy_ci": ci["mean_entropy"],
        "max_entropy": max_h,
        "entropy_ratio": mean_h / max_h,
        "entropy_ratio_ci": [v / max_h for v in ci["mean_entropy"]],
        "low_entropy_fraction": math.nan if low is None else float(low.mean()),
        "low_entropy_fraction_ci": ci.get("low_entropy_fraction", [math.nan, math.nan]),
        "near_zero_sample_fraction": float(near.mean()),
        "near_zero_sample_fraction_ci": ci["near_zero_sample_fraction"],
        "duplicate_rate": float(np.asarray(is_duplicate, dtype=bool).mean()),
        "fixed_point_fraction": float(np.asarray(is_fixed_point, dtype=bool).mean()),
        "mean_fixed_point_distance": float(np.asarray(fixed_point_distance, dtype=np.float64).mean()),
        **coincidences(duplicate_of, confidence),
        **basin_statistics(basin_agreement, confidence, h.size),
        "near_pairs": None if near_earlier is None else int(np.asarray(near_earlier, dtype=np.int64).sum()),
        "near_copy_fraction": None if near_earlier is None else float(near_fraction),
        **position_information(tokens, seed),
        "layout": layout,
        "seq_len": None if seq_len is None else int(seq_len),
        "tau": float(tau),
        "t_eval": float(t_eval),
    }


def training_set_comparison(stats: dict, n_train: int, min_pairs: int = 3) -> str:
    """What the coincidences say next to the training-set size a model card states (`--n-train`)."""
    lo, hi = stats["distinct_sequences_ci"]
    n = stats["n_samples"]
    if stats["colliding_pairs"] >= min_pairs:
        if hi is not None and hi < n_train:
            return (f"the samples come from fewer sequences (95% CI {lo:,.0f}–{hi:,.0f}) than the {n_train:,} "
                    "training sequences: a stored subset, or a collapsed model")
        if lo is not None and lo > n_train:
            return (f"the samples repeat, but come from more sequences (≥ {lo:,.0f}) than the {n_train:,} "
                    "training sequences")
        return (f"consistent with drawing from the {n_train:,} training sequences (95% CI "
                f"{lo:,.0f}–{'∞' if hi is None else f'{hi:,.0f}'})")
    if lo is not None and lo > n_train:
        return (f"the model produces more distinct sequences (≥ {lo:,.0f}, 95%) than the {n_train:,} it was "
                "trained on: it does not only replay whole training sequences (it may still recombine stored parts)")
    # samples at which a uniform draw from n_train sequences shows min_pairs pairs 95 % of the time
    need = next(k for k in (2 ** j for j in range(4, 40))
                if 1 - poisson_cdf(min_pairs - 1, k * (k - 1) / 2 / n_train) >= 0.95)
    return (f"{n} samples cannot tell whether the samples replay the {n_train:,} training sequences "
            f"(≥ {lo:,.0f} distinct, 95%); about {need:,} samples would show repeats if they did")


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion (NaN, NaN for n = 0)."""
    if n == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference_interval(successes_a: int, n_a: int, successes_b: int, n_b: int,
                        confidence: float) -> tuple[float, float]:
    """Interval of the difference of two proportions p_a − p_b from each one's Wilson interval
    (Newcombe's hybrid score interval, method 10; a MOVER interval): it carries both splits'
    uncertainty and, unlike a percentile bootstrap, does not collapse when a split is all 0 or
    all 1 (4/4 vs 0/4 at 95 %: [+0.31, +1.00], not [+1, +1]). (NaN, NaN) when a split is empty."""
    if n_a == 0 or n_b == 0:
        return (math.nan, math.nan)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    lo_a, hi_a = wilson_interval(successes_a, n_a, confidence)
    lo_b, hi_b = wilson_interval(successes_b, n_b, confidence)
    d = p_a - p_b
    return (max(-1.0, d - math.sqrt((p_a - lo_a) ** 2 + (hi_b - p_b) ** 2)),
            min(1.0, d + math.sqrt((hi_a - p_a) ** 2 + (p_b - lo_b) ** 2)))


POSITION_REPLICATES = 99   # shifted copies of the samples: the permutation p-value is ≥ 1 / 100


def column_entropy(tokens: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of the empirical token distribution at each position over the
    samples: tokens [N, L] int → [L] float64."""
    n = tokens.shape[0]
    ordered = np.sort(tokens, axis=0)                                        # [N, L]
    starts = np.ones_like(ordered, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]                                 # first row of each run
    out = np.empty(tokens.shape[1])
    for j in range(tokens.shape[1]):
        counts = np.diff(np.append(np.flatnonzero(starts[:, j]), n)) / n
        out[j] = -(counts * np.log(counts)).sum()
    return out


def position_information(tokens, seed: int, replicates: int = POSITION_REPLICATES) -> dict:
    """How much the samples' tokens depend on their position: the mean over positions of the
    entropy of the token at that position across samples, subtracted from the same for the samples
    each rotated by its own random offset (nats; ≈ the mutual information between a token and its
    position, with the plug-in bias of N samples cancelling between the two).

    A model of text cut into blocks from a token stream (memaudit's trainer, the Duo/UDLM 'wrap'
    layout) has no reason to put a token at one position rather than another: ≈ 0. A model that
    stores training blocks puts their tokens at their stored positions even when its samples
    recombine or garble them: it is positive. So is any model of a layout in which every sequence
    starts at a document start (padded sentences), which is why the rule uses it only for
    stream-cut training data (memaudit.verdict.scan).

    The p-value is a Monte Carlo permutation test of "every position has the same token
    distribution" (rotations leave such samples' distribution unchanged): the share of the
    `replicates` rotated copies (seeded by derive_seed(seed, 'position')) whose mean column entropy
    is at most the samples' own, with the usual +1. tokens [N, L] → {position_information,
    position_information_p}; NaN for fewer than 2 samples or positions."""
    if tokens is None:
        return {"position_information": math.nan, "position_information_p": math.nan}
    t = np.asarray(tokens, dtype=np.int64)
    n, length = t.shape
    if n < 2 or length < 2:
        return {"position_information": math.nan, "position_information_p": math.nan}
    rng = generator(derive_seed(seed, "position"))
    own = float(column_entropy(t).mean())
    columns = np.arange(length)[None, :]
    rotated = np.empty(replicates)
    for r in range(replicates):
        offsets = rng.integers(0, length, size=n)[:, None]                  # one rotation per sample
        rotated[r] = column_entropy(np.take_along_axis(t, (columns + offsets) % length, axis=1)).mean()
    return {"position_information": float(rotated.mean() - own),
            "position_information_p": float((1 + (rotated <= own).sum()) / (replicates + 1))}


def basin_statistics(basin_agreement, confidence: float, n: int) -> dict:
    """Share of samples that return whole after re-noising (attractors) with its Wilson CI, and
    the mean share of tokens that return; NaN where the basin test was not run."""
    if basin_agreement is None:
        return {"basin_return_rate": math.nan, "basin_return_rate_ci": [math.nan, math.nan],
                "mean_basin_agreement": math.nan}
    a = np.asarray(basin_agreement, dtype=np.float64)
    returned = int((a >= 1.0).sum())
    return {"basin_return_rate": returned / a.size,
            "basin_return_rate_ci": list(wilson_interval(returned, int(a.size), confidence)),
            "mean_basin_agreement": float(a.mean())}


def record_statistics(record: dict, t_eval: float, tau: float, resamples: int, confidence: float,
                      k: int | None = None) -> dict | None:
    """`scan_statistics` of a stored point at any (t_eval, τ, bootstrap) it was measured at; None
    when t_eval was not measured. k: use only the first k samples.

    record (the calibration-table layout): t_values [T], sample_mean_entropy [T][N] (per-sample
    mean entropy at each t), duplicate_of [N] (−1: none), is_fixed_point [N],
    fixed_point_distance [N] or None (tables from before it was recorded: NaN, which switches its
    threshold off), vocab_size, scan_seed; optionally basin_agreement, near_copies_earlier,
    sample_tokens [N][L] (the samples, for position_information) and layout."""
    t_values = [float(t) for t in record["t_values"]]
    idx = next((i for i, t in enumerate(t_values) if math.isclose(t, t_eval, rel_tol=1e-9, abs_tol=1e-12)), None)
    if idx is None:
        return None
    h = np.asarray(record["sample_mean_entropy"][idx], dtype=np.float64)
    dup = np.asarray(record["duplicate_of"], dtype=np.int64)
    fp = np.asarray(record["is_fixed_point"], dtype=bool)
    dist = record.get("fixed_point_distance")
    dist = np.full(fp.shape, np.nan) if dist is None else np.asarray(dist, dtype=np.float64)
    basin = record.get("basin_agreement")
    basin = None if basin is None else np.asarray(basin, dtype=np.float64)
    near = record.get("near_copies_earlier")
    near = None if near is None else np.asarray(near, dtype=np.int64)
    tokens = record.get("sample_tokens")
    tokens = None if tokens is None else np.asarray([list(row) for row in tokens], dtype=np.int64)
    if k is not None:
        h, dup, fp, dist = h[:k], dup[:k], fp[:k], dist[:k]
        dup = np.where(dup < k, dup, -1)
        basin = None if basin is None else basin[:k]
        near = None if near is None else near[:k]       # counts of *earlier* samples: any prefix is exact
        tokens = None if tokens is None else tokens[:k]
    return scan_statistics(h, dup, fp, dist, vocab_size=int(record["vocab_size"]), tau=tau, t_eval=t_eval,
                           seed=int(record["scan_seed"]), resamples=resamples, confidence=confidence,
                           basin_agreement=basin, seq_len=record.get("seq_len"), near_earlier=near,
                           near_fraction=record.get("near_copy_fraction"), tokens=tokens,
                           layout=record.get("layout"))


# ------------------------------------------------------------------------- evidence with data
def proportion(flags, confidence: float) -> tuple[float, list[float], int]:
    """(share of True, its Wilson interval, count) of a bool array; NaN for an empty one."""
    f = np.asarray(flags, dtype=bool)
    k = int(f.sum())
    return (k / f.size if f.size else math.nan), list(wilson_interval(k, int(f.size), confidence)), k


def extraction_statistics(is_copy, is_near_copy, longest_span, seq_len: int, confidence: float) -> dict:
    """Training copies among generated samples: the extraction rate (exact copies) and the near-copy
    rate with Wilson intervals, and the distribution of the longest verbatim training span per
    sample (tokens): mean, quantiles and a histogram over 0 … L (entry k counts samples whose
    longest span is k tokens)."""
    rate, ci, k = proportion(is_copy, confidence)
    near, near_ci, k_near = proportion(is_near_copy, confidence)
    span = np.asarray(longest_span, dtype=np.int64)
    q = np.quantile(span, [0.5, 0.9, 0.99]) if span.size else [math.nan] * 3
    return {"extraction_rate": rate, "extraction_rate_ci": ci, "n_training_copies": k,
            "near_copy_rate": near, "near_copy_rate_ci": near_ci, "n_near_copies": k_near,
            "longest_span_mean": float(span.mean()) if span.size else math.nan,
            "longest_span_quantiles": {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
                                       "max": int(span.max()) if span.size else 0},
            "longest_span_histogram": np.bincount(np.clip(span, 0, seq_len), minlength=seq_len + 1).tolist()}


def entropy_gap_statistics(train_means, sample_means, resamples: int, confidence: float, seed: int) -> dict:
    """The paper's entropy gap from per-sequence mean entropies (nats): the mean on training
    sequences and on generated samples, each with a percentile-bootstrap interval, and the gap
    mean(samples) − mean(training) with an interval resampling both independently."""
    tr, sa = np.asarray(train_means, dtype=np.float64), np.asarray(sample_means, dtype=np.float64)
    return {"train_mean_entropy": nan_mean(tr),
            "train_mean_entropy_ci": list(bootstrap_mean_ci(tr, resamples, confidence, derive_seed(seed, "train"))),
            "sample_mean_entropy": nan_mean(sa),
            "sample_mean_entropy_ci": list(bootstrap_mean_ci(sa, resamples, confidence, derive_seed(seed, "samples"))),
            "entropy_gap": nan_mean(sa) - nan_mean(tr),
            "entropy_gap_ci": list(bootstrap_gap_ci(sa, tr, resamples, confidence, derive_seed(seed, "gap"))),
            "n_train_sequences": int(tr.size), "n_samples": int(sa.size)}
