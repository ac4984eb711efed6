"""Every interval says its level, and gap intervals carry both splits' uncertainty (issue 29)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from memaudit.stats import bootstrap_gap_ci, difference_interval, wilson_interval
from memaudit.verdict import Evidence, load_rule
from report_fixtures import TEST_RULE, fake_scan_result


def test_difference_interval_does_not_collapse_at_the_boundary():
    lo, hi = difference_interval(4, 4, 0, 4, 0.95)
    assert 0.2 < lo < 0.4 and hi == 1.0                       # a bootstrap of 1,1,1,1 − 0,0,0,0 gives [1, 1]
    assert bootstrap_gap_ci(np.ones(4), np.zeros(4), 200, 0.95, seed=0) == (1.0, 1.0)
    lo, hi = difference_interval(0, 4, 0, 4, 0.95)
    assert lo < -0.4 and hi > 0.4 and math.isclose(lo, -hi)
    a, b = wilson_interval(0, 4, 0.95), wilson_interval(0, 4, 0.95)
    assert hi - lo >= max(a[1] - a[0], b[1] - b[0])           # at least as wide as either split's own
    assert difference_interval(0, 0, 1, 2, 0.95) == pytest.approx((math.nan, math.nan), nan_ok=True)


def test_difference_interval_covers_the_true_difference():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        a, b = rng.random(30) < 0.7, rng.random(30) < 0.4
        lo, hi = difference_interval(int(a.sum()), 30, int(b.sum()), 30, 0.95)
        covered += lo <= 0.3 <= hi
    assert covered / 400 > 0.92


def test_pattern_gaps_use_both_splits_intervals():
    from memaudit.recovery import difference_interval as used

    assert used is difference_interval


@pytest.mark.parametrize("confidence,label", [(None, "95% CI"), (0.95, "95% CI"), (0.999, "99.9% CI")])
def test_verdict_sentences_name_the_level_of_their_intervals(confidence, label):
    result = fake_scan_result(memorizing_share=0.9)
    rule = load_rule(TEST_RULE)
    decision = rule.decide(Evidence.from_stats(result.stats, steps=8, confidence=confidence))
    assert label in decision.explanation, decision.explanation
    assert (" CI [" not in decision.explanation.replace(label + " [", "")), decision.explanation


def test_an_adaptive_early_stop_quotes_99_9_percent_intervals():
    from memaudit.probe import decide_on
    from memaudit.verdict.sequential import EARLY_CONFIDENCE

    result = fake_scan_result(memorizing_share=0.9)
    measured = {"tokens": result.tokens, "entropy": result.entropy, "top1": result.top1_prob,
                "fp_dist": result.fixed_point_distance, "basin": result.basin_agreement,
                "duplicate_of": result.duplicate_of, "near_earlier": result.near_copies_earlier}
    _, early = decide_on(measured, 64, result.settings, result.t_values, result.rule, 1234, EARLY_CONFIDENCE)
    _, final = decide_on(measured, 64, result.settings, result.t_values, result.rule, 1234)
    assert "99.9% CI" in early.explanation and "95% CI" in final.explanation
