"""The adaptive scan's stopping rule: a group-sequential design with fixed looks.

A scan samples in rounds. After each round (a "look") the rule's statistics are computed on all
samples so far and the rule decides. The scan stops early only when the decision at a look is
settled with every interval taken at EARLY_CONFIDENCE (99.9 %) instead of the rule's 95 %: a
definite verdict (memorizing or generalizing), or `undertrained` by the lower bound of the entropy
relative to ln V (a model that has learned little stays so with more samples); otherwise it draws
the next round. The last look, at --samples, is
exactly the fixed-sample scan at the rule's confidence. This is the Haybittle–Peto design: the
early looks spend at most (1 − EARLY_CONFIDENCE) each, so with K − 1 early looks the chance that
any early stop is wrong is at most (K − 1) × 0.1 % (0.3 % for looks at 32/64/128/256), added to
the fixed-sample test's 5 % — and where the full scan would be definite, an early stop agrees
with it unless one of those 0.1 % events happened.

Why this works for every statistic the rule reads: a definite verdict needs every bound it rests
on to lie past its threshold; taking the bound at 99.9 % is stricter than at 95 %, and each
sample's values do not depend on when it was drawn (per-sample random streams,
memaudit.sampling.SampleStreams), so the samples of an early stop are the first samples of the
full scan. Coincidences only grow with more samples: a look with too few samples to see repeats
cannot be definite through them. The one statistic whose power grows with the samples in another
way — the position information (per-position entropies of N samples saturate at ln N) — makes a
'generalizing' that it hints against (p ≤ 0.05) unsettled, so the scan draws the next round.

Looks double from the floor (--min-samples, by default the rule's min_samples) to the maximum
(--samples): 32, 64, 128, 256. Deterministic: the looks are fixed in advance and the decision at
each is a function of the samples and the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

EARLY_CONFIDENCE = 0.999
DESIGN = "Haybittle–Peto group-sequential"


def looks(min_samples: int, max_samples: int) -> list[int]:
    """The sample counts at which the rule is evaluated: min_samples doubling up to max_samples
    (always the last look)."""
    min_samples = max(1, min(int(min_samples), int(max_samples)))
    counts, n = [], min_samples
    while n < max_samples:
        counts.append(n)
        n *= 2
    counts.append(int(max_samples))
    return counts


@dataclass(frozen=True)
class Stopping:
    """How an adaptive scan ended: what every report states."""

    adaptive: bool
    looks: tuple[int, ...]          # the planned looks
    samples_used: int
    stopped_early: bool
    reason: str                     # one line

    def describe(self) -> dict:
        doc = {"adaptive": self.adaptive, "looks": list(self.looks), "samples_used": self.samples_used,
               "stopped_early": self.stopped_early, "reason": self.reason}
        if self.adaptive:
            doc.update(design=DESIGN, early_confidence=EARLY_CONFIDENCE,
                       early_error_bound=round((len(self.looks) - 1) * (1 - EARLY_CONFIDENCE), 6))
        return doc


def stops(decision) -> bool:
    """Whether the scan stops at an early look with this decision (Decision.settled)."""
    return bool(decision.settled)


def stopping(adaptive: bool, planned: list[int], used: int, verdict: str) -> Stopping:
    """The Stopping record of a scan that used `used` samples and ended with `verdict`."""
    if not adaptive:
        return Stopping(False, tuple(planned), used, False, f"fixed sample count ({used}; --no-adaptive)")
    if used < planned[-1]:
        return Stopping(True, tuple(planned), used, True,
                        f"{verdict} settled at the look at {used} samples with {EARLY_CONFIDENCE:.1%} intervals")
    return Stopping(True, tuple(planned), used, False,
                    f"no definite verdict at {EARLY_CONFIDENCE:.1%} before the last look; "
                    f"decided on all {used} samples at the rule's confidence")


def replay(planned: list[int], decide_at):
    """The adaptive decision on stored per-sample values (calibration and validation tables, in
    the order they were drawn): decide_at(k, confidence) decides on the first k samples with
    intervals at `confidence` (None: the rule's). → (decision, samples used)."""
    for look in planned[:-1]:
        decision = decide_at(look, EARLY_CONFIDENCE)
        if stops(decision):
            return decision, look
    return decide_at(planned[-1], None), planned[-1]
