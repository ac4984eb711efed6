"""The scan rule: scan statistics (memaudit.stats.scan_statistics) → memorizing / generalizing /
inconclusive.

A rule is data, not code: a JSON file under memaudit/calibration/ — rule.json, written by
`memaudit calibrate` (docs/calibration.md), or the hand-set provisional.json where rule.json is
absent; `scan(rule=PATH)` / `--rule FILE` picks another. Every report names the rule, its status and where its numbers come from.

Rule file fields

    name, version, status ("provisional" | "calibrated"), source (how the numbers were obtained),
    description, statistics (what each statistic means), t_eval, tau, min_samples, confidence,
    bootstrap_resamples, sampler (settings the thresholds were measured with), and

    thresholds.memorizing.mean_entropy_max            H̄ upper CI bound below this → memorizing
    thresholds.memorizing.near_zero_sample_fraction_min share of samples with mean H < τ, lower
                                                      CI bound above this → memorizing
    thresholds.generalizing.mean_entropy_min          H̄ lower CI bound above this, and
    thresholds.generalizing.near_zero_sample_fraction_max   upper CI bound of the share below this,
    thresholds.generalizing.duplicate_rate_max        and at most this share of repeated samples
                                                      → generalizing (unless undertrained)
    thresholds.generalizing.fixed_point_distance_max  optional: and the samples' mean distance from
                                                      fixed points of the greedy dynamics (share of
                                                      tokens it changes) at most this
    undertrained.entropy_ratio_min                    H̄ / ln V lower CI bound at or above this →
                                                      undertrained, whatever else
    undertrained.entropy_ratio_soft                   H̄ / ln V at or above this …
    undertrained.fixed_point_fraction_max             … with fewer fixed points than this →
                                                      undertrained

Decision, in order (the first that applies):

    1. fewer than min_samples samples                 → inconclusive, reason "too_few_samples"
    2. t_eval differs from the rule's                 → inconclusive, reason "rule_mismatch"
    3. undertrained (entropy near ln V; or high and samples not fixed points of the model's own
       greedy dynamics)                               → inconclusive, reason "undertrained"
    4. memorizing by mean entropy or by the near-zero sample share
                                                      → memorizing, reason "low_entropy"
                                                        (or "near_zero_samples")
    5. generalizing by mean entropy and near-zero share and duplicates, with samples close to
       fixed points of the model's own dynamics       → generalizing, reason "finite_entropy"
                                                        (samples far from them: inconclusive,
                                                        reason "unstable_samples")
    6. otherwise (a CI straddles a threshold, lies between the two regimes' thresholds, or the
       signals disagree)                              → inconclusive, reason "ci_straddles_threshold",
                                                        "between_thresholds" or "conflicting_signals"
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

CALIBRATION_DIR = Path(__file__).parent.parent / "calibration"
CALIBRATED_RULE = CALIBRATION_DIR / "rule.json"  # written by `memaudit calibrate`; preferred when present
DEFAULT_RULE = CALIBRATED_RULE if CALIBRATED_RULE.exists() else CALIBRATION_DIR / "provisional.json"
VERDICTS = ("memorizing", "generalizing", "inconclusive")
STATUSES = ("provisional", "calibrated")


class RuleError(UsageError):
    """A rule file is missing, unreadable or malformed (CLI exit code 2)."""


@dataclass(frozen=True)
class Evidence:
    """What the rule looks at; built from the scan statistics (memaudit.stats.scan_statistics)."""

    n_samples: int
    mean_entropy: float
    mean_entropy_ci: tuple[float, float]
    max_entropy: float
    near_zero_sample_fraction: float
    near_zero_sample_fraction_ci: tuple[float, float]
    low_entropy_fraction: float
    duplicate_rate: float
    fixed_point_fraction: float
    t_eval: float
    steps: int | None = None
    fixed_point_distance: float = math.nan   # mean share of tokens the greedy dynamics changes

    @classmethod
    def from_stats(cls, stats: dict, steps: int | None = None) -> "Evidence":
        return cls(n_samples=int(stats["n_samples"]), mean_entropy=float(stats["mean_entropy"]),
                   mean_entropy_ci=tuple(stats["mean_entropy_ci"]), max_entropy=float(stats["max_entropy"]),
                   near_zero_sample_fraction=float(stats["near_zero_sample_fraction"]),
                   near_zero_sample_fraction_ci=tuple(stats["near_zero_sample_fraction_ci"]),
                   low_entropy_fraction=float(stats["low_entropy_fraction"]),
                   duplicate_rate=float(stats["duplicate_rate"]),
                   fixed_point_fraction=float(stats["fixed_point_fraction"]),
                   t_eval=float(stats["t_eval"]), steps=steps,
                   fixed_point_distance=float(stats.get("mean_fixed_point_distance", math.nan)))

    @property
    def entropy_ratio(self) -> float:
        return self.mean_entropy / self.max_entropy

    @property
    def entropy_ratio_ci(self) -> tuple[float, float]:
        return (self.mean_entropy_ci[0] / self.max_entropy, self.mean_entropy_ci[1] / self.max_entropy)


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str
    explanation: str


@dataclass(frozen=True)
class Rule:
    name: str
    version: int
    status: str
    source: str
    t_eval: float
    tau: float
    min_samples: int
    confidence: float
    bootstrap_resamples: int
    thresholds: dict
    undertrained: dict
    sampler: dict = field(default_factory=dict)
    description: str = ""
    statistics: dict = field(default_factory=dict)
    sha256: str = ""

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, sha256: str = "", origin: str = "rule") -> "Rule":
        if not isinstance(d, dict):
            raise RuleError(f"{origin}: a rule file must hold a JSON object")
        try:
            rule = cls(name=str(d["name"]), version=int(d["version"]), status=str(d["status"]),
                       source=str(d["source"]), t_eval=float(d["t_eval"]), tau=float(d["tau"]),
                       min_samples=int(d["min_samples"]), confidence=float(d.get("confidence", 0.95)),
                       bootstrap_resamples=int(d.get("bootstrap_resamples", 1000)),
                       thresholds=dict(d["thresholds"]), undertrained=dict(d["undertrained"]),
                       sampler=dict(d.get("sampler", {})), description=str(d.get("description", "")),
                       statistics=dict(d.get("statistics", {})), sha256=sha256)
            th_m, th_g = rule.thresholds["memorizing"], rule.thresholds["generalizing"]
            numbers = [th_m["mean_entropy_max"], th_m["near_zero_sample_fraction_min"],
                       th_g["mean_entropy_min"], th_g["near_zero_sample_fraction_max"], th_g["duplicate_rate_max"],
                       rule.undertrained["entropy_ratio_min"], rule.undertrained["entropy_ratio_soft"],
                       rule.undertrained["fixed_point_fraction_max"],
                       th_g.get("fixed_point_distance_max", 0.0)]
        except (KeyError, TypeError, ValueError) as e:
            raise RuleError(f"{origin}: missing or invalid field {e}") from None
        if rule.status not in STATUSES:
            raise RuleError(f"{origin}: status must be one of {', '.join(STATUSES)} (got {rule.status!r})")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise RuleError(f"{origin}: thresholds must be finite numbers")
        if th_m["mean_entropy_max"] > th_g["mean_entropy_min"]:
            raise RuleError(f"{origin}: memorizing.mean_entropy_max exceeds generalizing.mean_entropy_min")
        if th_g["near_zero_sample_fraction_max"] > th_m["near_zero_sample_fraction_min"]:
            raise RuleError(f"{origin}: generalizing.near_zero_sample_fraction_max exceeds "
                            "memorizing.near_zero_sample_fraction_min")
        if not (0 < rule.t_eval <= 1 and rule.tau > 0 and rule.min_samples >= 1 and 0.5 < rule.confidence < 1):
            raise RuleError(f"{origin}: t_eval, tau, min_samples or confidence out of range")
        return rule

    @classmethod
    def load(cls, path: str | Path) -> "Rule":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RuleError(f"rule file {path} not found") from None
        except OSError as e:
            raise RuleError(f"rule file {path}: {e.strerror or e}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RuleError(f"rule file {path}: not valid JSON ({e})") from None
        return cls.from_dict(data, sha256=hashlib.sha256(raw).hexdigest(), origin=f"rule file {path}")

    def describe(self) -> dict:
        """What every report says about the rule (no file paths: they vary between machines)."""
        return {"name": self.name, "version": self.version, "status": self.status, "source": self.source,
                "sha256": self.sha256, "t_eval": self.t_eval, "tau": self.tau, "min_samples": self.min_samples,
                "confidence": self.confidence, "thresholds": self.thresholds, "undertrained": self.undertrained}

    # -- the decision -------------------------------------------------------------------------
    def decide(self, ev: Evidence) -> Decision:
        th_m, th_g, und = self.thresholds["memorizing"], self.thresholds["generalizing"], self.undertrained
        h_lo, h_hi = ev.mean_entropy_ci
        f_lo, f_hi = ev.near_zero_sample_fraction_ci
        r_lo = ev.entropy_ratio_ci[0]
        fmt = _fmt

        if ev.n_samples < self.min_samples:
            return Decision("inconclusive", "too_few_samples",
                            f"{ev.n_samples} samples < {self.min_samples} required by rule {self.name}")
        if not math.isclose(ev.t_eval, self.t_eval, rel_tol=1e-9, abs_tol=1e-12):
            return Decision("inconclusive", "rule_mismatch",
                            f"entropy measured at t={ev.t_eval:g} but rule {self.name} is defined at "
                            f"t={self.t_eval:g}")
        if r_lo >= und["entropy_ratio_min"]:
            return Decision("inconclusive", "undertrained",
                            f"mean entropy {fmt(ev.mean_entropy)} nats is {ev.entropy_ratio:.0%} of ln V = "
                            f"{fmt(ev.max_entropy)} (≥ {und['entropy_ratio_min']:.0%}): the model has learned "
                            "little, high entropy is not evidence of generalization")
        if ev.entropy_ratio >= und["entropy_ratio_soft"] and ev.fixed_point_fraction < und["fixed_point_fraction_max"]:
            return Decision("inconclusive", "undertrained",
                            f"mean entropy {fmt(ev.mean_entropy)} nats is {ev.entropy_ratio:.0%} of ln V and only "
                            f"{ev.fixed_point_fraction:.0%} of samples are fixed points of the model's own greedy "
                            f"dynamics (< {und['fixed_point_fraction_max']:.0%}): samples look like noise to the model")

        mem_by_mean = h_hi < th_m["mean_entropy_max"]
        mem_by_share = f_lo > th_m["near_zero_sample_fraction_min"]
        if mem_by_mean or mem_by_share:
            if mem_by_mean:
                return Decision("memorizing", "low_entropy",
                                f"mean entropy {fmt(ev.mean_entropy)} nats, CI [{fmt(h_lo)}, {fmt(h_hi)}] below "
                                f"{fmt(th_m['mean_entropy_max'])}; {ev.near_zero_sample_fraction:.0%} of samples "
                                f"near zero, {ev.duplicate_rate:.0%} duplicates")
            return Decision("memorizing", "near_zero_samples",
                            f"{ev.near_zero_sample_fraction:.0%} of samples have mean entropy < τ = {self.tau:g} "
                            f"(CI lower bound {f_lo:.0%} > {th_m['near_zero_sample_fraction_min']:.0%})")

        gen_by_mean = h_lo > th_g["mean_entropy_min"]
        gen_by_share = f_hi < th_g["near_zero_sample_fraction_max"]
        few_dups = ev.duplicate_rate <= th_g["duplicate_rate_max"]
        stable_max = th_g.get("fixed_point_distance_max")
        if gen_by_mean and gen_by_share and few_dups and stable_max is not None \
                and ev.fixed_point_distance > stable_max:
            return Decision("inconclusive", "unstable_samples",
                            f"mean entropy {fmt(ev.mean_entropy)} nats looks generalizing, but the model's greedy "
                            f"dynamics changes {ev.fixed_point_distance:.0%} of the tokens of its own samples "
                            f"(> {stable_max:.0%}): its samples are not stable states of the model, as in models "
                            "partway to memorizing; `memaudit recover` with training data decides")
        if gen_by_mean and gen_by_share and few_dups:
            return Decision("generalizing", "finite_entropy",
                            f"mean entropy {fmt(ev.mean_entropy)} nats, CI [{fmt(h_lo)}, {fmt(h_hi)}] above "
                            f"{fmt(th_g['mean_entropy_min'])}; {ev.near_zero_sample_fraction:.0%} of samples near "
                            f"zero; {ev.entropy_ratio:.0%} of ln V")
        if gen_by_mean and not (gen_by_share and few_dups):
            problem = (f"{ev.duplicate_rate:.0%} duplicate samples (> {th_g['duplicate_rate_max']:.0%})"
                       if not few_dups else
                       f"near-zero sample share CI upper bound {f_hi:.0%} ≥ {th_g['near_zero_sample_fraction_max']:.0%}")
            return Decision("inconclusive", "conflicting_signals",
                            f"mean entropy {fmt(ev.mean_entropy)} nats looks generalizing but {problem}")
        straddles = [name for name, value in (("memorizing", th_m["mean_entropy_max"]),
                                              ("generalizing", th_g["mean_entropy_min"])) if h_lo <= value <= h_hi]
        if straddles:
            return Decision("inconclusive", "ci_straddles_threshold",
                            f"mean entropy CI [{fmt(h_lo)}, {fmt(h_hi)}] straddles the {straddles[0]} threshold "
                            f"{fmt(th_m['mean_entropy_max'] if straddles[0] == 'memorizing' else th_g['mean_entropy_min'])}"
                            " nats; more samples may decide")
        return Decision("inconclusive", "between_thresholds",
                        f"mean entropy {fmt(ev.mean_entropy)} nats lies between the memorizing "
                        f"({fmt(th_m['mean_entropy_max'])}) and generalizing ({fmt(th_g['mean_entropy_min'])}) "
                        "thresholds: a model near the transition")


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def load_rule(rule: "Rule | str | Path | dict | None" = None) -> Rule:
    """The rule to apply: a Rule, a rule file path, a dict, or None for the default rule file."""
    if isinstance(rule, Rule):
        return rule
    if rule is None:
        return Rule.load(DEFAULT_RULE)
    if isinstance(rule, dict):
        blob = json.dumps(rule, sort_keys=True).encode()
        return Rule.from_dict(rule, sha256=hashlib.sha256(blob).hexdigest())
    return Rule.load(rule)


GATE_CODES = {"generalizing": 0, "memorizing": 1, "inconclusive": 3}
FAIL_ON = ("memorizing", "inconclusive")


def gate_exit_code(verdict: str, fail_on: str = "memorizing", exit_zero: bool = False) -> int:
    """Exit code of a *completed* scan (errors have their own codes 2/4/5 and never reach here).

    fail_on="memorizing" (default): the code is the verdict's own: generalizing 0 (gate passed),
        memorizing 1 (gate failed), inconclusive 3 (not a pass; a pipeline can tolerate it
        explicitly, e.g. `|| [ $? -eq 3 ]`).
    fail_on="inconclusive": inconclusive also fails the gate and exits 1 like memorizing, for
        pipelines that read 1 as "policy failure" and any other non-zero code as "tool problem".
    exit_zero=True: 0 whatever the verdict (report-only runs); it overrides fail_on.
    """
    if fail_on not in FAIL_ON:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)} (got {fail_on!r})")
    if verdict not in GATE_CODES:
        raise ValueError(f"unknown verdict {verdict!r}")
    if exit_zero:
        return 0
    if verdict == "inconclusive" and fail_on == "inconclusive":
        return 1
    return GATE_CODES[verdict]


def list_rules() -> list[Path]:
    """The rule files shipped with memaudit."""
    return sorted(CALIBRATION_DIR.glob("*.json"))
