"""Ground-truth labels: the regime of a reference model, from its token-recovery verdict.

A calibration point is labelled memorizing, generalizing, "undertrained" (recovery below the
floor in both splits) or "transition" (any other inconclusive recovery verdict, and partial
memorization: a memorizing verdict whose training recovery falls below FULL_RECALL at some t0).
The scan rule is fitted to these labels (memaudit.verdict.fit): a definite scan verdict on a
transition or undertrained point counts as wrong.
"""
from __future__ import annotations

import math

LABELS = ("memorizing", "generalizing", "transition", "undertrained")

# "Training examples recovered ≈ 100 %" (SPEC §2): a memorizing verdict counts as full
# memorization only if every t0 of the recovery test, up to half the tokens replaced, restores at
# least this share of the training tokens. Below it the training sequences are attractors with
# small basins only: the model's samples from noise never reach them (docs/transition.md), so no
# data-free probe can see the memorization, and the point belongs to the transition band.
FULL_RECALL = 0.9


def ground_truth(verdict: str, reason: str, train_recovery=()) -> str:
    """The calibration label of a point from its recovery verdict (and training recovery per t0)."""
    if verdict == "memorizing":
        rates = [float(v) for v in train_recovery if v is not None and math.isfinite(float(v))]
        return "transition" if rates and min(rates) < FULL_RECALL else "memorizing"
    if verdict == "generalizing":
        return verdict
    return "undertrained" if reason == "low_recovery" else "transition"
