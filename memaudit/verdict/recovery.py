"""The recovery rule: token-recovery summaries → memorizing / generalizing / inconclusive.

Like the scan rule, the rule is data: its thresholds live in one file, recovery_rule.json beside
this module (RECOVERY_RULE); `memaudit.recovery.RecoverySettings` and `recover()` take each
threshold as an option whose default is the file's, and `RecoverySettings.rule` is the rule they
make. The verdict is the ground truth used to calibrate the data-free scan (docs/calibration.md):

    Only t0 levels with ≥ min_corrupted_tokens (4) corrupted tokens per sequence on average count
    (the largest t0 when none has); all levels are reported.

    memorizing    at some t0, the gap's CI lower bound exceeds gap_memorizing (0.25):
                  training examples are recovered far better than held-out ones;
    inconclusive  ("low_recovery") otherwise, when neither split's mean recovery reaches
                  recovery_floor (0.1) at any t0: the model restores almost nothing (chance is 1/V),
                  so train ≈ test says nothing (an undertrained model);
    generalizing  the gap's CI lies inside ±equivalence_margin (0.1) at every t0: held-out text
                  is as stable as training text;
    inconclusive  otherwise: "transition" (a gap between the margin and the memorizing
                  threshold) or "ci_too_wide" (point estimates equal but too few sequences).

The rule reads, per split × t0, the summaries of memaudit.recovery.summarize (t0,
mean_corrupted_tokens, recovery_rate) and, per t0, the train − test gaps of its gap_table (t0,
train, test, gap, gap_ci).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .scan import Decision, RuleError

RECOVERY_RULE_FILE = Path(__file__).with_name("recovery_rule.json")
THRESHOLDS = ("gap_memorizing", "equivalence_margin", "recovery_floor", "min_corrupted_tokens")


@dataclass(frozen=True)
class RecoveryRule:
    gap_memorizing: float
    equivalence_margin: float
    recovery_floor: float
    min_corrupted_tokens: float
    name: str = "recovery"
    version: int = 1
    description: str = ""
    statistics: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, origin: str = "recovery rule") -> "RecoveryRule":
        try:
            th = d["thresholds"]
            rule = cls(**{k: float(th[k]) for k in THRESHOLDS}, name=str(d.get("name", "recovery")),
                       version=int(d.get("version", 1)), description=str(d.get("description", "")),
                       statistics=dict(d.get("statistics", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise RuleError(f"{origin}: missing or invalid field {e}") from None
        if not all(math.isfinite(v) and v >= 0 for v in rule.thresholds().values()):
            raise RuleError(f"{origin}: thresholds must be finite and ≥ 0")
        return rule

    @classmethod
    def load(cls, path: str | Path = RECOVERY_RULE_FILE) -> "RecoveryRule":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RuleError(f"recovery rule file {path}: {e}") from None
        except RecursionError:
            raise RuleError(f"recovery rule file {path}: nested too deeply to be a rule") from None
        return cls.from_dict(data, origin=f"recovery rule file {path}")

    def thresholds(self) -> dict[str, float]:
        """The thresholds, as every recovery report records them."""
        return {k: getattr(self, k) for k in THRESHOLDS}

    def decide(self, summaries: list[dict], gaps: list[dict]) -> Decision:
        """The recovery verdict (module docstring)."""
        usable = [g for g in gaps if not math.isnan(g["gap"]) and not math.isnan(g["gap_ci"][0])]
        corrupted = {}
        for s in summaries:
            if "t0" in s:
                corrupted[s["t0"]] = min(corrupted.get(s["t0"], math.inf), s.get("mean_corrupted_tokens", math.inf))
        enough = [g for g in usable if corrupted.get(g["t0"], math.inf) >= self.min_corrupted_tokens]
        usable = enough or sorted(usable, key=lambda g: g["t0"])[-1:]
        if not usable:
            return Decision("inconclusive", "no_corrupted_tokens",
                            "no sequence of one of the splits had a corrupted token at any t0; use more examples or "
                            "larger t0")
        mem = [g for g in usable if g["gap_ci"][0] > self.gap_memorizing]
        if mem:
            g = max(mem, key=lambda g: g["gap_ci"][0])
            return Decision("memorizing", "train_recovered_test_not",
                            f"at t0={g['t0']:g} training examples recover {g['train']:.0%} of corrupted tokens, "
                            f"held-out examples {g['test']:.0%} (gap CI [{g['gap_ci'][0]:.2f}, {g['gap_ci'][1]:.2f}] > "
                            f"{self.gap_memorizing:g})")
        used_t0 = {g["t0"] for g in usable}
        means = [s["recovery_rate"] for s in summaries
                 if not math.isnan(s["recovery_rate"]) and s.get("t0", next(iter(used_t0))) in used_t0]
        if means and max(means) < self.recovery_floor:
            return Decision("inconclusive", "low_recovery",
                            f"neither split recovers {self.recovery_floor:.0%} of corrupted tokens at any t0 used "
                            f"(best {max(means):.1%}): the model restores almost nothing (undertrained?), so "
                            "train ≈ test is no evidence of generalization")
        m = self.equivalence_margin
        if all(-m <= g["gap_ci"][0] and g["gap_ci"][1] <= m for g in usable):
            worst = max(usable, key=lambda g: abs(g["gap"]))
            return Decision("generalizing", "train_equals_test",
                            f"held-out examples recover as well as training examples at every t0 (largest gap "
                            f"{worst['gap']:+.3f} at t0={worst['t0']:g}, all CIs within ±{m:g})")
        if all(abs(g["gap"]) <= m for g in usable):
            return Decision("inconclusive", "ci_too_wide",
                            f"train and test recovery agree within ±{m:g} but the gap's CI is wider; use more "
                            "examples (--n)")
        g = max(usable, key=lambda g: g["gap"])
        return Decision("inconclusive", "transition",
                        f"train − test recovery gap {g['gap']:+.2f} at t0={g['t0']:g} (CI [{g['gap_ci'][0]:.2f}, "
                        f"{g['gap_ci'][1]:.2f}]) lies between ±{m:g} and the memorizing threshold "
                        f"{self.gap_memorizing:g}: a model in the transition")


RECOVERY_RULE = RecoveryRule.load()
