"""Per-document evidence with training data: which training blocks the model stores.

The aggregate recovery gap of `recover` hides a stored subset: a model that generalizes on 99 % of
its training set and stores the 1 % that was duplicated has train ≈ test on average. Here every
training example is compared with the held-out examples measured the same way (same corruption
level, same length, same positions: both are model-length blocks):

    exposure of a training block = its restoration rate at t0 (corrupted tokens restored, as in
        `recover`) and, per conditioning pattern, its completion rate (regenerated tokens that
        come back), each as a percentile of the held-out distribution and as an excess over the
        held-out mean;
    stored  = restoration rate above the held-out STORED_QUANTILE quantile (and above
        MIN_RATE), with the pattern completions in the same direction when any were measured;
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
MIN_RATE = 0.5
TOP = 10


def dup_ngram(seq_len: int) -> int:
    return max(4, min(16, seq_len // 4))


def duplication_counts(blocks: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """For each block [N, L], the median over its n-grams of the number of corpus blocks [M, L]
    that hold that n-gram (each corpus block counted once per n-gram). → [N] int."""
    from .extraction import ngram_hashes

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
    threshold = float(max(MIN_RATE, np.quantile(ok_te, STORED_QUANTILE))) if len(ok_te) else math.nan
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
        "n_stored": k, "stored_share": share, "stored_share_ci": [max(0.0, lo - false_share), max(0.0, hi - false_share)],
        "duplication_ngram": dup_ngram(rows["x0"].shape[1]),
        "stored_duplication_median": float(np.median(dup_all[stored])) if dup_all is not None and k else math.nan,
        "test_completion_mean": {p: float(np.nanmean(pattern_rates[(p, "test")])) for p in patterns},
        "most_exposed": listed,
    }
