"""Every threshold the scan rule reads (memaudit.verdict.scan), on hand-built Evidence (issue 25).

For each threshold read on a CI bound, a pair of Evidence with the same point estimate: in the
first the point estimate lies on the deciding side of the threshold but the bound the rule must
read does not (and the other bound does), in the second the bound does too; the verdicts differ. A
rule that read the point estimate or the other bound gives the first the second's verdict. For
thresholds read on a point value (duplicate share, fixed-point distance, counts, p-values), values
just either side of it and on it. The rule is a fixed test rule with round numbers, so that these
tests do not move when `memaudit calibrate` refits the shipped one. No trained model."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from memaudit.verdict import Evidence, load_rule

LN_V = math.log(32)
RULE = load_rule({
    "name": "bounds-test", "version": 5, "status": "provisional", "source": "tests/test_rule_bounds.py",
    "t_eval": 0.05, "tau": 0.3, "min_samples": 32, "confidence": 0.95, "bootstrap_resamples": 100,
    "thresholds": {"memorizing": {"mean_entropy_max": 0.5, "near_zero_sample_fraction_min": 0.2},
                   "generalizing": {"mean_entropy_min": 0.7, "near_zero_sample_fraction_max": 0.1,
                                    "duplicate_rate_max": 0.5, "fixed_point_distance_max": 0.1}},
    "undertrained": {"entropy_ratio_min": 0.8, "entropy_ratio_soft": 0.6, "fixed_point_fraction_max": 0.5},
    "evidence": {"min_colliding_pairs": 3, "near_copy_fraction": 0.25, "min_near_pairs": 3, "basin_t": 0.5,
                 "basin_return_min": 0.5, "basin_return_max": 0.25, "position_information_max": 0.1,
                 "position_information_p_max": 0.01, "position_information_p_settle": 0.05,
                 "position_clear_min_samples": 128},
})

# A clear generalizer: entropy well above 0.7 nats, no near-zero samples, no repeats, stable samples.
GEN = Evidence(n_samples=256, mean_entropy=1.0, mean_entropy_ci=(0.95, 1.05), max_entropy=LN_V,
               near_zero_sample_fraction=0.0, near_zero_sample_fraction_ci=(0.0, 0.0), low_entropy_fraction=0.0,
               duplicate_rate=0.0, fixed_point_fraction=0.9, t_eval=0.05, fixed_point_distance=0.05,
               colliding_pairs=0, sample_pairs=256 * 255 // 2, distinct_sequences_ci=(5000.0, None))
# Low entropy with samples that repeat (5 identical pairs): memorizing once the entropy is low.
LOW = replace(GEN, mean_entropy=0.05, mean_entropy_ci=(0.03, 0.07), near_zero_sample_fraction=0.9,
              near_zero_sample_fraction_ci=(0.85, 0.95), duplicate_rate=0.02, colliding_pairs=5,
              distinct_sequences_ci=(2000.0, 30000.0))


def decide(ev: Evidence):
    d = RULE.decide(ev)
    return d.verdict, d.reason


def test_the_bases_are_what_they_claim():
    assert decide(GEN) == ("generalizing", "finite_entropy")
    assert decide(LOW) == ("memorizing", "repeated_samples")


# ------------------------------------------------------------------ thresholds read on a CI bound
def test_memorizing_mean_entropy_is_read_on_the_upper_bound():
    # point 0.45 < 0.5 and lower bound 0.40 < 0.5, but upper bound 0.55 ≥ 0.5: not low by the mean
    straddling = replace(LOW, mean_entropy=0.45, mean_entropy_ci=(0.40, 0.55), near_zero_sample_fraction=0.0,
                         near_zero_sample_fraction_ci=(0.0, 0.0))
    assert decide(straddling) == ("inconclusive", "ci_straddles_threshold")
    assert decide(replace(straddling, mean_entropy_ci=(0.40, 0.49))) == ("memorizing", "repeated_samples")


def test_memorizing_near_zero_share_is_read_on_the_lower_bound():
    # mean entropy between the thresholds; share 0.3 > 0.2 and upper bound 0.45 > 0.2, lower 0.15 ≤ 0.2
    between = replace(LOW, mean_entropy=0.6, mean_entropy_ci=(0.55, 0.65), near_zero_sample_fraction=0.3,
                      near_zero_sample_fraction_ci=(0.15, 0.45))
    assert decide(between) == ("inconclusive", "between_thresholds")
    assert decide(replace(between, near_zero_sample_fraction_ci=(0.25, 0.35))) == ("memorizing", "repeated_samples")


def test_generalizing_mean_entropy_is_read_on_the_lower_bound():
    # point 0.75 > 0.7 and upper bound 0.85 > 0.7, lower bound 0.65 ≤ 0.7
    straddling = replace(GEN, mean_entropy=0.75, mean_entropy_ci=(0.65, 0.85))
    assert decide(straddling) == ("inconclusive", "ci_straddles_threshold")
    assert decide(replace(straddling, mean_entropy_ci=(0.72, 0.78))) == ("generalizing", "finite_entropy")


def test_generalizing_near_zero_share_is_read_on_the_upper_bound():
    # share 0.05 < 0.1 and lower bound 0 < 0.1, upper bound 0.15 ≥ 0.1
    wide = replace(GEN, near_zero_sample_fraction=0.05, near_zero_sample_fraction_ci=(0.0, 0.15))
    assert decide(wide) == ("inconclusive", "conflicting_signals")
    assert decide(replace(wide, near_zero_sample_fraction_ci=(0.0, 0.08))) == ("generalizing", "finite_entropy")


def test_undertrained_is_read_on_the_lower_bound_of_the_entropy_ratio_and_is_settled():
    # ratio 0.82 ≥ 0.8 and upper bound 0.86 ≥ 0.8, lower bound 0.78 < 0.8: not undertrained by the
    # CI (many fixed points, so not by the soft test either): a generalizing verdict
    wide = replace(GEN, mean_entropy=0.82 * LN_V, mean_entropy_ci=(0.78 * LN_V, 0.86 * LN_V))
    assert decide(wide) == ("generalizing", "finite_entropy")
    narrow = replace(wide, mean_entropy_ci=(0.81 * LN_V, 0.83 * LN_V))
    d = RULE.decide(narrow)
    assert (d.verdict, d.reason) == ("inconclusive", "undertrained")
    assert d.settled is True                    # more samples cannot move a lower bound already above it


def test_soft_undertrained_reads_the_point_ratio_and_the_fixed_point_share_and_is_not_settled():
    soft = replace(GEN, mean_entropy=0.65 * LN_V, mean_entropy_ci=(0.55 * LN_V, 0.75 * LN_V), fixed_point_fraction=0.4)
    d = RULE.decide(soft)
    assert (d.verdict, d.reason, d.settled) == ("inconclusive", "undertrained", False)
    assert decide(replace(soft, fixed_point_fraction=0.5)) == ("generalizing", "finite_entropy")   # not < 0.5
    assert decide(replace(soft, fixed_point_fraction=0.49)) == ("inconclusive", "undertrained")
    at_soft = replace(soft, mean_entropy=0.6 * LN_V)                                              # ratio = 0.6: ≥
    assert decide(at_soft) == ("inconclusive", "undertrained")
    below = replace(soft, mean_entropy=0.58 * LN_V)
    assert decide(below) == ("generalizing", "finite_entropy")


def test_basin_return_min_is_read_on_the_lower_bound():
    # low entropy, no repeats; 60 % return whole, upper bound 0.75 > 0.5, lower bound 0.45 ≤ 0.5
    base = replace(LOW, colliding_pairs=0, duplicate_rate=0.0, basin_return_rate=0.6, basin_return_rate_ci=(0.45, 0.75))
    assert decide(base) == ("inconclusive", "low_entropy_language")
    assert decide(replace(base, basin_return_rate_ci=(0.52, 0.68))) == ("memorizing", "attractor_samples")


def test_basin_return_max_is_read_on_the_upper_bound():
    # generalizing entropy; 20 % return whole, lower bound 0.10 ≤ 0.25, upper bound 0.30 > 0.25
    base = replace(GEN, basin_return_rate=0.2, basin_return_rate_ci=(0.10, 0.30))
    assert decide(base) == ("inconclusive", "conflicting_signals")
    assert decide(replace(base, basin_return_rate_ci=(0.15, 0.24))) == ("generalizing", "finite_entropy")
    # attractors (lower bound above basin_return_min) beside a generalizing entropy: conflicting
    assert decide(replace(base, basin_return_rate=0.7, basin_return_rate_ci=(0.55, 0.8))) == \
        ("inconclusive", "conflicting_signals")


# ------------------------------------------------------------------ thresholds read on a value
@pytest.mark.parametrize("rate,expected", [(0.45, "generalizing"), (0.5, "generalizing"), (0.55, "inconclusive")])
def test_duplicate_rate_max(rate, expected):
    assert decide(replace(GEN, duplicate_rate=rate))[0] == expected


@pytest.mark.parametrize("distance,expected", [(0.08, ("generalizing", "finite_entropy")),
                                               (0.1, ("generalizing", "finite_entropy")),
                                               (0.12, ("inconclusive", "unstable_samples"))])
def test_fixed_point_distance_max(distance, expected):
    assert decide(replace(GEN, fixed_point_distance=distance)) == expected


@pytest.mark.parametrize("pairs,expected", [(2, ("inconclusive", "low_entropy_language")),
                                            (3, ("memorizing", "repeated_samples"))])
def test_min_colliding_pairs(pairs, expected):
    assert decide(replace(LOW, colliding_pairs=pairs)) == expected


@pytest.mark.parametrize("near,expected", [(None, ("inconclusive", "low_entropy_language")),
                                           (2, ("inconclusive", "low_entropy_language")),
                                           (3, ("memorizing", "repeated_samples"))])
def test_min_near_pairs(near, expected):
    assert decide(replace(LOW, colliding_pairs=0, near_pairs=near)) == expected


@pytest.mark.parametrize("n,expected", [(31, "too_few_samples"), (32, "repeated_samples")])
def test_min_samples(n, expected):
    assert decide(replace(LOW, n_samples=n))[1] == expected


def test_t_eval_must_match():
    assert decide(replace(LOW, t_eval=0.1)) == ("inconclusive", "rule_mismatch")


@pytest.mark.parametrize("info,p,layout,expected", [
    (0.15, 0.005, "stream", ("memorizing", "position_locked_samples")),
    (0.15, 0.01, "stream", ("memorizing", "position_locked_samples")),       # p ≤ p_max
    (0.15, 0.02, "stream", ("inconclusive", "low_entropy_language")),        # p above p_max
    (0.10, 0.005, "stream", ("inconclusive", "low_entropy_language")),       # not above information_max
    (0.15, 0.005, "unknown", ("inconclusive", "low_entropy_language")),      # locked, but not a stream layout
    (0.15, 0.005, "aligned", ("inconclusive", "low_entropy_language")),
])
def test_position_lock_on_low_entropy(info, p, layout, expected):
    ev = replace(LOW, colliding_pairs=0, duplicate_rate=0.0, position_information=info,
                 position_information_p=p, layout=layout)
    assert decide(ev) == expected


@pytest.mark.parametrize("layout,expected", [("stream", "position_locked_samples"),
                                             ("unknown", "position_locked_samples"),
                                             ("aligned", "finite_entropy")])
def test_position_lock_on_finite_entropy(layout, expected):
    ev = replace(GEN, position_information=0.15, position_information_p=0.005, layout=layout)
    assert decide(ev)[1] == expected


@pytest.mark.parametrize("p,settled", [(0.04, False), (0.05, False), (0.06, True)])
def test_position_p_settle(p, settled):
    d = RULE.decide(replace(GEN, position_information=0.01, position_information_p=p, layout="stream"))
    assert (d.verdict, d.settled) == ("generalizing", settled)


@pytest.mark.parametrize("n,p,layout,expected", [
    (128, 0.5, "stream", ("generalizing", "finite_entropy")),       # the position test clears the samples
    (127, 0.5, "stream", ("inconclusive", "unstable_samples")),     # too few samples for its power
    (128, 0.05, "stream", ("inconclusive", "unstable_samples")),    # p not above p_settle
    (128, 0.5, "aligned", ("inconclusive", "unstable_samples")),    # a layout where it means nothing
])
def test_position_clear_min_samples(n, p, layout, expected):
    ev = replace(GEN, n_samples=n, fixed_point_distance=0.12, position_information=0.01,
                 position_information_p=p, layout=layout)
    assert decide(ev) == expected


def test_outside_domain_only_without_basins():
    rule = load_rule({**RULE.describe(), "domain": {"vocab_size": [32, 4096]}})
    outside = replace(GEN, vocab_size=50257)
    assert rule.decide(outside).reason == "outside_domain"
    assert rule.decide(replace(outside, basin_return_rate=0.1, basin_return_rate_ci=(0.05, 0.2))).reason == \
        "finite_entropy"
    assert rule.decide(replace(outside, vocab_size=4096)).reason == "finite_entropy"


# ------------------------------------------------------------------ evidence, exit codes, looks
def test_evidence_from_stats_maps_every_field():
    from memaudit.stats import scan_statistics

    n = 12
    dup = [-1, -1, -1, 0, 2, 1, -1, 0, 2, 2, -1, -1]
    stats = scan_statistics([0.1 * i for i in range(n)], dup, [i % 2 == 0 for i in range(n)], [0.01 * i for i in range(n)],
                            vocab_size=32, tau=0.3, t_eval=0.05, seed=0, resamples=50, confidence=0.95,
                            basin_agreement=[1.0] * 3 + [0.5] * 9, seq_len=8, near_earlier=[0, 1] * 6,
                            near_fraction=0.25, layout="stream")
    stats["position_information"], stats["position_information_p"] = 0.2, 0.03
    ev = Evidence.from_stats(stats, steps=16, n_parameters=1234)
    assert (ev.n_samples, ev.steps, ev.n_parameters, ev.vocab_size, ev.seq_len, ev.layout) == (n, 16, 1234, 32, 8, "stream")
    assert ev.mean_entropy == pytest.approx(0.55) and ev.max_entropy == pytest.approx(LN_V)
    assert ev.mean_entropy_ci == tuple(stats["mean_entropy_ci"])
    assert ev.near_zero_sample_fraction == pytest.approx(3 / 12)
    assert ev.near_zero_sample_fraction_ci == tuple(stats["near_zero_sample_fraction_ci"])
    assert ev.duplicate_rate == pytest.approx(0.5) and ev.fixed_point_fraction == pytest.approx(0.5)
    assert ev.fixed_point_distance == pytest.approx(0.055) and ev.t_eval == 0.05
    assert (ev.colliding_pairs, ev.near_pairs, ev.sample_pairs) == (10, 6, 66)
    assert ev.distinct_sequences_ci == tuple(stats["distinct_sequences_ci"])
    assert ev.basin_return_rate == pytest.approx(0.25) and ev.basin_return_rate_ci == tuple(stats["basin_return_rate_ci"])
    assert (ev.position_information, ev.position_information_p) == (0.2, 0.03)
    assert math.isnan(ev.low_entropy_fraction)
    bare = Evidence.from_stats({k: v for k, v in stats.items() if k not in (
        "near_pairs", "colliding_pairs", "sample_pairs", "distinct_sequences_ci", "basin_return_rate",
        "basin_return_rate_ci", "position_information", "position_information_p", "mean_fixed_point_distance")})
    assert bare.near_pairs is None and bare.colliding_pairs == 0 and bare.sample_pairs == 0 and bare.steps is None
    assert math.isnan(bare.basin_return_rate) and math.isnan(bare.fixed_point_distance) and not bare.basins_measured
    assert math.isnan(bare.position_information) and bare.distinct_sequences_ci == (None, None)


@pytest.mark.parametrize("verdict,fail_on,exit_zero,code", [
    ("generalizing", "memorizing", False, 0), ("memorizing", "memorizing", False, 1),
    ("inconclusive", "memorizing", False, 3), ("inconclusive", "inconclusive", False, 1),
    ("memorizing", "inconclusive", False, 1), ("generalizing", "inconclusive", False, 0),
    ("memorizing", "memorizing", True, 0), ("inconclusive", "inconclusive", True, 0)])
def test_gate_exit_code(verdict, fail_on, exit_zero, code):
    from memaudit.verdict.scan import gate_exit_code

    assert gate_exit_code(verdict, fail_on, exit_zero) == code


def test_gate_exit_code_refuses_unknown_values():
    from memaudit.verdict.scan import gate_exit_code

    with pytest.raises(ValueError):
        gate_exit_code("generalizing", "generalizing")
    with pytest.raises(ValueError):
        gate_exit_code("unsure")


def test_looks_stopping_and_replay():
    from memaudit.verdict import sequential
    from memaudit.verdict.scan import Decision

    assert sequential.looks(32, 256) == [32, 64, 128, 256] and sequential.looks(32, 100) == [32, 64, 100]
    assert sequential.looks(64, 32) == [32] and sequential.looks(0, 5) == [1, 2, 4, 5]
    assert sequential.stops(Decision("memorizing", "repeated_samples", "", settled=True))
    assert not sequential.stops(Decision("inconclusive", "between_thresholds", "", settled=False))
    fixed = sequential.stopping(False, [32, 64], 64, "memorizing")
    assert (fixed.adaptive, fixed.stopped_early, fixed.samples_used) == (False, False, 64)
    early = sequential.stopping(True, [32, 64, 128], 32, "memorizing")
    assert early.stopped_early and early.describe()["early_error_bound"] == pytest.approx(0.002)
    assert early.describe()["looks"] == [32, 64, 128] and early.describe()["design"] == sequential.DESIGN
    assert "design" not in fixed.describe()
    late = sequential.stopping(True, [32, 64], 64, "inconclusive")
    assert not late.stopped_early and late.samples_used == 64
    seen = []

    def decide_at(k, confidence):
        seen.append((k, confidence))
        return Decision("memorizing" if k >= 64 else "inconclusive", "r", "")

    decision, used = sequential.replay([32, 64, 128, 256], decide_at)
    assert used == 64 and decision.verdict == "memorizing"
    assert seen == [(32, sequential.EARLY_CONFIDENCE), (64, sequential.EARLY_CONFIDENCE)]
    seen.clear()
    decision, used = sequential.replay([32, 64], lambda k, c: seen.append((k, c)) or Decision("inconclusive", "r", ""))
    assert used == 64 and seen == [(32, sequential.EARLY_CONFIDENCE), (64, None)]


# ------------------------------------------------------ equality at thresholds, the entropy-only rule
def test_strict_and_inclusive_comparisons_at_each_threshold():
    # memorizing: H̄ upper bound strictly below 0.5; share lower bound strictly above 0.2
    assert decide(replace(LOW, mean_entropy=0.45, mean_entropy_ci=(0.40, 0.5), near_zero_sample_fraction=0.0,
                          near_zero_sample_fraction_ci=(0.0, 0.0))) == ("inconclusive", "ci_straddles_threshold")
    assert decide(replace(LOW, mean_entropy=0.6, mean_entropy_ci=(0.55, 0.65), near_zero_sample_fraction=0.3,
                          near_zero_sample_fraction_ci=(0.2, 0.4))) == ("inconclusive", "between_thresholds")
    # generalizing: H̄ lower bound strictly above 0.7; share upper bound strictly below 0.1
    assert decide(replace(GEN, mean_entropy=0.75, mean_entropy_ci=(0.7, 0.8))) == ("inconclusive", "ci_straddles_threshold")
    assert decide(replace(GEN, near_zero_sample_fraction=0.05, near_zero_sample_fraction_ci=(0.0, 0.1))) == \
        ("inconclusive", "conflicting_signals")
    # undertrained: lower bound of H̄ / ln V at or above 0.8 (many fixed points: not the soft test)
    d = RULE.decide(replace(GEN, mean_entropy=0.85 * LN_V, mean_entropy_ci=(0.8 * LN_V, 0.9 * LN_V)))
    assert (d.verdict, d.reason, d.settled) == ("inconclusive", "undertrained", True)
    assert decide(replace(GEN, mean_entropy=0.85 * LN_V, mean_entropy_ci=(0.7999 * LN_V, 0.9 * LN_V))) == \
        ("generalizing", "finite_entropy")
    # t_eval compared with a relative tolerance of 1e-9
    assert decide(replace(LOW, t_eval=0.05 * (1 + 1e-12))) == ("memorizing", "repeated_samples")
    assert decide(replace(LOW, t_eval=0.05 * (1 + 1e-6))) == ("inconclusive", "rule_mismatch")


def test_every_decision_is_a_full_triple():
    d = RULE.decide(replace(LOW, n_samples=8))
    assert (d.verdict, d.reason, d.settled) == ("inconclusive", "too_few_samples", False) and "8 samples" in d.explanation
    d = RULE.decide(replace(GEN, position_information=0.15, position_information_p=0.005, layout="stream"))
    assert (d.verdict, d.reason) == ("inconclusive", "position_locked_samples") and "fixed positions" in d.explanation
    assert "--layout aligned" in RULE.decide(replace(GEN, position_information=0.15, position_information_p=0.005,
                                                     layout="unknown")).explanation
    d = RULE.decide(replace(LOW, colliding_pairs=0, position_information=0.15, position_information_p=0.005,
                            layout="stream"))
    assert (d.verdict, d.reason, d.settled) == ("memorizing", "position_locked_samples", True)


def test_entropy_only_rule_ignores_the_stored_set_evidence():
    """decide(entropy_only=True), used only to fit thresholds: low entropy alone is 'memorizing'."""
    d = RULE.decide(replace(LOW, colliding_pairs=0), entropy_only=True)
    assert (d.verdict, d.reason) == ("memorizing", "low_entropy") and "below" in d.explanation
    gen_with_basins = replace(GEN, basin_return_rate=0.7, basin_return_rate_ci=(0.55, 0.8),
                              position_information=0.15, position_information_p=0.005, layout="stream",
                              colliding_pairs=50, vocab_size=10**6)
    rule = load_rule({**RULE.describe(), "domain": {"vocab_size": [32, 4096]}})
    assert rule.decide(gen_with_basins, entropy_only=True).reason == "finite_entropy"
    assert rule.decide(gen_with_basins).reason == "conflicting_signals"
