"""memaudit.stats (one bootstrap, one set of scan statistics) and the recovery rule as data."""
import math

import numpy as np
import pytest

from memaudit import stats
from memaudit.probe import ScanSettings, find_duplicates, summarize
from memaudit.recovery import RecoverySettings
from memaudit.verdict import RECOVERY_RULE, RecoveryRule, RuleError

RULE_KEYS = ("n_samples", "mean_entropy", "mean_entropy_ci", "max_entropy", "entropy_ratio", "entropy_ratio_ci",
             "low_entropy_fraction", "low_entropy_fraction_ci", "near_zero_sample_fraction",
             "near_zero_sample_fraction_ci", "duplicate_rate", "fixed_point_fraction", "mean_fixed_point_distance",
             "tau", "t_eval")


def test_resampling_does_not_depend_on_the_chunk_size(monkeypatch):
    x = np.random.default_rng(0).normal(size=300)
    whole = stats.resampled_means({"x": x}, 500, stats.generator(5))["x"]
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 7 * 300 + 11)        # 7 resamples per chunk
    chunked = stats.resampled_means({"x": x}, 500, stats.generator(5))["x"]
    assert np.array_equal(whole, chunked)


def test_columns_share_their_resampled_indices():
    x = np.random.default_rng(1).random(50)
    means = stats.resampled_means({"a": x, "b": 2 * x}, 200, stats.generator(3))
    assert np.array_equal(2 * means["a"], means["b"])


def test_the_scan_and_a_stored_point_give_the_same_statistics():
    """The scan (probe.summarize) and the re-judging of stored points (record_statistics) share one
    implementation: from the same per-sample arrays, the same numbers to the bit."""
    rng = np.random.default_rng(2)
    n, length, vocab = 96, 16, 32
    entropy = rng.gamma(0.6, 0.5, size=(2, n, length)).astype(np.float32)
    entropy[:, :30] *= 0.01
    tokens = rng.integers(0, 4, size=(n, 2))
    is_dup, dup_of = find_duplicates(tokens)
    fp = np.where(rng.random(n) < 0.4, 0.0, rng.random(n)).astype(np.float32)
    settings = ScanSettings(samples=n, seed=4, t_eval=0.05, tau=0.1, bootstrap_resamples=300)
    basin = np.where(rng.random(n) < 0.3, 1.0, rng.random(n)).astype(np.float32)
    scanned = summarize(entropy, np.exp(-entropy), dup_of, fp, basin, vocab, settings, [0.05, 0.25])
    record = {"t_values": [0.05, 0.25], "sample_mean_entropy": entropy.astype(np.float64).mean(axis=2),
              "duplicate_of": dup_of, "is_fixed_point": fp == 0, "fixed_point_distance": fp, "vocab_size": vocab,
              "scan_seed": 4, "basin_agreement": basin, "seq_len": length}
    stored = stats.record_statistics(record, 0.05, 0.1, 300, 0.95)
    for key in RULE_KEYS:
        if key.startswith("low_entropy_fraction"):     # token-level: a stored point does not keep it
            assert np.isnan(stored[key]).all()
            continue
        assert stored[key] == scanned[key], key
    assert stats.record_statistics(record, 0.1, 0.1, 300, 0.95) is None         # not measured at t = 0.1
    first = stats.record_statistics(record, 0.25, 0.3, 100, 0.9, k=40)
    assert first["n_samples"] == 40 and first["t_eval"] == 0.25 and first["tau"] == 0.3


def test_recovery_rule_is_data_and_the_settings_default_to_it():
    assert RecoveryRule.load() == RECOVERY_RULE
    settings = RecoverySettings()
    assert settings.rule == RECOVERY_RULE
    assert {k: getattr(settings, k) for k in RECOVERY_RULE.thresholds()} == RECOVERY_RULE.thresholds()
    assert RecoverySettings(gap_memorizing=0.4).rule.gap_memorizing == 0.4
    with pytest.raises(RuleError):
        RecoveryRule.from_dict({"thresholds": {"gap_memorizing": 0.25}})
    with pytest.raises(RuleError):
        RecoveryRule.from_dict({"thresholds": {**RECOVERY_RULE.thresholds(), "recovery_floor": math.nan}})


def test_sweep_rejudges_stored_recovery_with_the_recovery_rule():
    from memaudit.experiments import current_recovery_decision

    gaps = [{"t0": 0.05, "train": 0.41, "test": 0.33, "gap": 0.08, "gap_ci": [0.0, 0.16]},
            {"t0": 0.25, "train": 0.25, "test": 0.27, "gap": -0.02, "gap_ci": [-0.05, 0.01]}]
    summaries = [{"split": split, "t0": t0, "recovery_rate": rate, "mean_corrupted_fraction": share}
                 for split in ("train", "test") for t0, rate, share in ((0.05, 0.4, 0.047), (0.25, 0.26, 0.24))]
    point = {"recovery": {"summaries": summaries, "gaps": gaps}, "seq_len": 32}
    # old points lack mean_corrupted_tokens: 0.047 × 32 ≈ 1.5 tokens at t0 = 0.05, too few to count
    assert current_recovery_decision(point) == ("generalizing", "train_equals_test")
    with_counts = [{**s, "mean_corrupted_tokens": 8.0} for s in summaries]
    d = RECOVERY_RULE.decide(with_counts, gaps)
    assert current_recovery_decision({**point, "recovery": {"summaries": with_counts, "gaps": gaps}}) == \
        (d.verdict, d.reason) == ("inconclusive", "ci_too_wide")
