"""Per-document evidence with training data: which training blocks the model stores.

The aggregate recovery gap of `recover` hides a stored subset: a model that generalizes on 99 % of
its training set and stores the 1 % that was duplicated has train ≈ test on average. Here every
training example is compared with the held-out examples measured the same way (same corruption
level, same length, same positions: both are model-length blocks):

    exposure of a training block = its restoration rate at t0 (corrupted tokens restored, as in
        `recover`) and, per conditioning pattern, its completion rate (regenerated tokens that
        come back), each as a percentile of the held-out distribution and as an excess over the
        held-out mean;
    stored  = restoration rate above the held-out STORED_QUANTILE quantile, at least MIN_RATIO
        times the held-out mean and at least MIN_RATE, with the pattern completions in the same direction when any were
        measured; a *finding* when the number of stored blocks is more than 1 % false positives
        explain (binomial tail < FINDING_P: 7 of 128, 5 of 64);
    share of the training set stored = (#stored − expected false positives) / n, with a Wilson
        interval; the expected false positive share is 1 − STORED_QUANTILE;
    duplication count of a block = the median, over its n-grams (n = 16 or L / 4), of how many
        training blocks hold that n-gram (the training set given, all of it): a document pasted
        100 times counts ≈ 100 whatever offset the blocks cut it at; a unique block counts 1.

The most exposed training blocks (highest excess) are listed with their text, rates,
duplication count and whether they are stored. Evidence beside the verdict, never deciding it.
"""
from __future__ import annotations

import math

import numpy as np

STORED_QUANTILE = 0.99
MIN_RATIO = 2.0            # a stored block restores at least twice as well as the reference on average
FINDING_P = 0.001          # the count of stored blocks must be this unlikely under 1 % false positives
MIN_RATE = 0.5             # a stored block restores at least this share of its corrupted tokens
MIN_DISTINCT = 0.35        # scan --train: … and at least this share of its tokens are distinct
TOP = 10


def stored_threshold(reference: np.ndarray) -> float:
    ref = reference[np.isfinite(reference)]
    if not len(ref):
        return math.nan
    return float(max(np.quantile(ref, STORED_QUANTILE), MIN_RATIO * np.mean(ref)))


def significant(k: int, n: int) -> bool:
    """k blocks above the reference's 99th percentile out of n: more than 1 % false positives explain
    (binomial tail < FINDING_P)?"""
    if n == 0 or k == 0:
        return False
    from scipy.stats import binom

    return bool(binom.sf(k - 1, n, 1 - STORED_QUANTILE) < FINDING_P)


def dup_ngram(seq_len: int) -> int:
    return max(4, min(16, seq_len // 4))


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """uint64 hashes of every n-gram along the last axis ([..., L] → [..., L − n + 1]): a wrapping
    polynomial in the token ids, mixed (collisions ~2⁻⁶⁴ per pair, harmless for counting)."""
    x = np.asarray(tokens).astype(np.uint64) + np.uint64(1)
    m = x.shape[-1] - n + 1
    h = np.zeros(x.shape[:-1] + (max(m, 0),), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * np.uint64(0x9E3779B97F4A7C15) + x[..., k:k + m]
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return h


def duplication_counts(blocks: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """For each block [N, L], the median over its n-grams of the number of corpus blocks [M, L]
    that hold that n-gram (each corpus block counted once per n-gram). → [N] int."""
    n = dup_ngram(blocks.shape[1])
    corpus_h = ngram_hashes(np.asarray(corpus), n)                    # [M, L − n + 1]
    # each block once per n-gram: the distinct hashes of each row
    srt = np.sort(corpus_h, axis=1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    keys, counts = np.unique(srt[first], return_counts=True)
    out = np.zeros(len(blocks), dtype=np.int64)
    block_h = ngram_hashes(np.asarray(blocks), n)
    for i, h in enumerate(block_h):
        pos = np.searchsorted(keys, h)
        pos = np.minimum(pos, len(keys) - 1)
        c = np.where(keys[pos] == h, counts[pos], 0)
        out[i] = int(np.median(c))
    return out


def percentile_of(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    ref = np.sort(reference[np.isfinite(reference)])
    if not len(ref):
        return np.full(len(values), np.nan)
    return np.searchsorted(ref, values, side="right") / len(ref)


def per_document_evidence(rows: dict, t0: float, pattern_rates: dict, corpus: np.ndarray | None, decode=None,
                          confidence: float = 0.95, top: int = TOP) -> dict:
    """rows: recover's per-sequence columns; t0: the corruption level compared; pattern_rates:
    {(pattern, split): [n] completion rates}; corpus: every training block (for duplication
    counts; None: not computed). → the 'documents' section of a recovery summary."""
    from .stats import wilson_interval

    split = np.asarray(rows["split"])
    at = np.isclose(rows["t0"], t0)
    tr, te = at & (split == "train"), at & (split == "test")
    rate_tr, rate_te = rows["recovery_rate"][tr].astype(float), rows["recovery_rate"][te].astype(float)
    x0_tr = rows["x0"][tr]
    ok_te = rate_te[np.isfinite(rate_te)]
    # The floor: measured on a code model with nothing planted, the relative bar alone marked 3 of 96
    # training blocks (restoration 0.19–0.30, duplication 1) — the tail of ordinary text.
    threshold = max(stored_threshold(rate_te), MIN_RATE)
    stored = np.isfinite(rate_tr) & (rate_tr > threshold)
    patterns = sorted({p for p, _ in pattern_rates})
    for p in patterns:   # a stored block also completes better than held-out text under each pattern
        a, b = pattern_rates[(p, "train")], pattern_rates[(p, "test")]
        stored &= a > np.nanmean(b)
    excess = rate_tr - (float(np.nanmean(rate_te)) if len(ok_te) else math.nan)
    n = int(tr.sum())
    k = int(stored.sum())
    false_share = 1 - STORED_QUANTILE
    share = max(0.0, k / n - false_share) if n else math.nan
    lo, hi = wilson_interval(k, n, confidence) if n else (math.nan, math.nan)
    dups = duplication_counts(x0_tr, corpus) if corpus is not None and n else np.full(n, -1)
    order = np.argsort(-np.nan_to_num(excess, nan=-np.inf), kind="stable")[:top]
    pct_tr = percentile_of(rate_tr, rate_te)
    listed = []
    for i in order:
        entry = {"example_id": int(rows["example_id"][tr][i]), "restoration_rate": float(rate_tr[i]),
                 "restoration_percentile_vs_test": float(pct_tr[i]), "excess_over_test": float(excess[i]),
                 "duplication_count": int(dups[i]), "stored": bool(stored[i]),
                 "completion": {p: float(pattern_rates[(p, "train")][i]) for p in patterns},
                 "text": decode(x0_tr[i]) if decode is not None else None}
        listed.append(entry)
    dup_all = dups if corpus is not None else None
    return {
        "t0": float(t0), "n_train": n, "n_test": int(te.sum()),
        "test_mean_restoration": float(np.nanmean(rate_te)) if len(ok_te) else math.nan,
        "stored_threshold": threshold, "stored_quantile": STORED_QUANTILE,
        "n_stored": k, "finding": significant(k, n), "stored_share": share, "stored_share_ci": [max(0.0, lo - false_share), max(0.0, hi - false_share)],
        "duplication_ngram": dup_ngram(rows["x0"].shape[1]),
        "stored_duplication_median": float(np.median(dup_all[stored])) if dup_all is not None and k else math.nan,
        "test_completion_mean": {p: float(np.nanmean(pattern_rates[(p, "test")])) for p in patterns},
        "most_exposed": listed,
    }


SCAN_BLOCKS = 128          # training blocks measured by scan --train: the most duplicated half, a seeded half
SCAN_T0 = 0.5
SCAN_STEPS = 16


def training_block_exposure(denoiser, documents: np.ndarray, samples: np.ndarray, seed: int,
                            batch_size: int = 64, decode=None, n_blocks: int = SCAN_BLOCKS, top: int = TOP) -> dict:
    """Per-document evidence of `scan --train`, where no held-out text is given: the restoration at
    t0 = SCAN_T0 of training blocks (the SCAN_BLOCKS // 2 most duplicated and as many seeded
    others) against the restoration of the scan's own samples measured the same way (the model's
    typical text; its own samples restore at least as well as unseen text, so the comparison is
    conservative). A training block is stored when it restores above the samples' STORED_QUANTILE
    quantile and MIN_RATIO times their mean; a finding when their number is significant. The stored share of the training set is extrapolated from the
    seeded half only (the duplicated half is chosen for exposure, not at random)."""
    import torch

    from .sampling import SampleStreams, reverse_process
    from .stats import derive_seed, wilson_interval

    documents = np.asarray(documents, dtype=np.int64)
    dups_all = duplication_counts(documents, documents)
    half = min(len(documents), n_blocks // 2)
    by_dup = np.argsort(-dups_all, kind="stable")[:half]
    rest = np.setdiff1d(np.arange(len(documents)), by_dup)
    rng = np.random.default_rng(derive_seed(seed, "doc-exposure"))
    seeded = np.sort(rng.choice(rest, size=min(len(rest), n_blocks - half), replace=False)) if len(rest) else rest
    chosen = np.concatenate([by_dup, seeded]).astype(np.int64)

    def restoration(x: np.ndarray, purpose: str) -> np.ndarray:
        out = []
        x = torch.as_tensor(x)
        for a in range(0, len(x), batch_size):
            x0 = x[a:a + batch_size]
            streams = SampleStreams(seed, ("doc-exposure", purpose), range(a, a + len(x0)))
            alpha = denoiser.schedule.alpha(torch.full((len(x0),), SCAN_T0, dtype=torch.float64))
            xt = streams.corrupt(x0, alpha, denoiser.vocab_size)
            y = reverse_process(denoiser, xt, SCAN_T0, SCAN_STEPS, streams=streams, final="greedy").cpu()
            c = xt != x0
            out.append(((c & (y == x0)).sum(1).double() / c.sum(1).clamp(min=1).double()).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    rate = restoration(documents[chosen], "train")
    ref = restoration(np.asarray(samples, dtype=np.int64), "samples")
    # Against the model's own samples (noisy text that restores poorly) the relative bar alone is too
    # low: text the language determines (banner lines, blank runs) restores well in any model of it.
    # Measured on a code model with nothing planted: 27 of 128 blocks, '#####…' banners first. So
    # a stored block must also restore at least MIN_RATE and not be degenerate (few distinct tokens).
    threshold = max(stored_threshold(ref), MIN_RATE)
    distinct = np.array([len(np.unique(b)) / len(b) for b in documents[chosen]])
    stored = (rate > threshold) & (distinct >= MIN_DISTINCT)
    is_seeded = np.zeros(len(chosen), dtype=bool)
    is_seeded[half:] = True
    k, n = int(stored[is_seeded].sum()), int(is_seeded.sum())
    lo, hi = wilson_interval(k, n, 0.95) if n else (math.nan, math.nan)
    false_share = 1 - STORED_QUANTILE
    excess = rate - float(np.mean(ref)) if len(ref) else rate
    order = np.argsort(-excess, kind="stable")[:top]
    return {
        "label": "per training block: beside the data-free verdict; stored blocks fail --fail-on stored-subset",
        "t0": SCAN_T0, "steps": SCAN_STEPS, "reference": "the scan's own samples, restored the same way",
        "n_measured": int(len(chosen)), "n_most_duplicated": int(half), "n_seeded": n,
        "samples_mean_restoration": float(np.mean(ref)) if len(ref) else math.nan,
        "stored_threshold": threshold, "n_stored": int(stored.sum()),
        "finding": significant(int(stored.sum()), int(len(chosen))),
        "stored_share": max(0.0, k / n - false_share) if n else math.nan,
        "stored_share_ci": [max(0.0, lo - false_share), max(0.0, hi - false_share)] if n else [math.nan, math.nan],
        "duplication_ngram": dup_ngram(documents.shape[1]),
        "most_exposed": [{"document": int(chosen[i]), "restoration_rate": float(rate[i]),
                          "excess_over_samples": float(excess[i]), "duplication_count": int(dups_all[chosen[i]]),
                          "stored": bool(stored[i]),
                          "text": decode(documents[chosen[i]]) if decode is not None else None} for i in order],
    }
