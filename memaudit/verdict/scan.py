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

Since version 2 (issue 12) a rule file also has

    evidence.min_colliding_pairs                      identical sample pairs that count as repeats
    evidence.basin_t                                  re-noising time of the basin test (the scan's)
    evidence.basin_return_min                         Wilson lower bound of the share of samples that
                                                      return whole above this → attractors
    evidence.basin_return_max                         … upper bound above this blocks "generalizing"
    evidence.position_information_max / _p_max        (version 4) nats a token tells about its position
                                                      above this, at permutation p ≤ _p_max → the
                                                      samples keep tokens at stored positions
    evidence.position_information_p_settle            a 'generalizing' with the position test's p at
                                                      or below this is not settled: an adaptive scan
                                                      draws more samples before it stops on it
    evidence.position_clear_min_samples               (version 5) with at least this many samples, a
                                                      layout other than aligned and the position
                                                      test's p above _p_settle, samples beyond the
                                                      fixed-point bound are not 'unstable_samples'
    domain.vocab_size / seq_len / n_parameters        [min, max] the rule was calibrated and validated on
    domain.mean_entropy                               [min, max] nats (recorded, not used)

(v1 files get the evidence defaults and no domain). The evidence layer is set by principle, not
fitted: the entropy thresholds are fitted with it switched off (decide(..., entropy_only=True)).

Decision, in order (the first that applies):

    1. fewer than min_samples samples                 → inconclusive, reason "too_few_samples"
    2. t_eval differs from the rule's                 → inconclusive, reason "rule_mismatch"
    3. undertrained (entropy near ln V; or high and samples not fixed points of the model's own
       greedy dynamics)                               → inconclusive, reason "undertrained"
    4. low entropy (mean-entropy CI below the memorizing threshold, or the near-zero sample share
       above its) — which a stored set and a language whose tokens are determined by their
       neighbours both produce, so it needs data-free evidence of a stored set:
         samples repeat (≥ min_colliding_pairs identical pairs: few distinct sequences, by
         capture–recapture)                           → memorizing, reason "repeated_samples"
         samples are attractors (return whole after re-noising at basin_t)
                                                      → memorizing, reason "attractor_samples"
         samples keep tokens at fixed positions, and the training sequences were cut from a
         stream (where no model of the language would)  → memorizing, reason "position_locked_samples"
         neither                                      → inconclusive, reason "low_entropy_language"
    5. finite entropy (mean-entropy CI above the generalizing threshold, few near-zero samples
       and duplicates): inconclusive if the samples repeat or are attractors, or the basin CI
       reaches basin_return_max ("conflicting_signals"), or the samples keep tokens at fixed
       positions unless the layout is 'aligned' ("position_locked_samples"), or they are far from fixed points
       and the position test (≥ position_clear_min_samples samples, layout not aligned) does not
       clear them ("unstable_samples"), or — without a basin test — the model lies outside the domain the
       absolute-nats thresholds were validated on ("outside_domain"); otherwise
                                                      → generalizing, reason "finite_entropy"
    6. otherwise (a CI straddles a threshold, lies between the two regimes' thresholds, or the
       signals disagree)                              → inconclusive, reason "ci_straddles_threshold",
                                                        "between_thresholds" or "conflicting_signals"
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
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
    colliding_pairs: int = 0                 # pairs of identical samples (memaudit.stats.coincidences)
    near_pairs: int | None = None            # pairs differing in ≤ near_copy_fraction of tokens (None: not measured)
    sample_pairs: int = 0
    distinct_sequences_ci: tuple = (None, None)
    basin_return_rate: float = math.nan      # share of samples returning whole after re-noising (NaN: not run)
    basin_return_rate_ci: tuple[float, float] = (math.nan, math.nan)
    position_information: float = math.nan   # nats a token carries about its position (NaN: not measured)
    position_information_p: float = math.nan # its shift-permutation p-value
    layout: str | None = None                # how the training sequences were cut: stream | aligned | unknown
    vocab_size: int | None = None
    seq_len: int | None = None
    n_parameters: int | None = None

    @classmethod
    def from_stats(cls, stats: dict, steps: int | None = None, n_parameters: int | None = None) -> "Evidence":
        return cls(n_samples=int(stats["n_samples"]), mean_entropy=float(stats["mean_entropy"]),
                   mean_entropy_ci=tuple(stats["mean_entropy_ci"]), max_entropy=float(stats["max_entropy"]),
                   near_zero_sample_fraction=float(stats["near_zero_sample_fraction"]),
                   near_zero_sample_fraction_ci=tuple(stats["near_zero_sample_fraction_ci"]),
                   low_entropy_fraction=float(stats["low_entropy_fraction"]),
                   duplicate_rate=float(stats["duplicate_rate"]),
                   fixed_point_fraction=float(stats["fixed_point_fraction"]),
                   t_eval=float(stats["t_eval"]), steps=steps,
                   fixed_point_distance=float(stats.get("mean_fixed_point_distance", math.nan)),
                   colliding_pairs=int(stats.get("colliding_pairs", 0)),
                   near_pairs=None if stats.get("near_pairs") is None else int(stats["near_pairs"]),
                   sample_pairs=int(stats.get("sample_pairs", 0)),
                   distinct_sequences_ci=tuple(stats.get("distinct_sequences_ci", (None, None))),
                   basin_return_rate=_float(stats.get("basin_return_rate")),
                   basin_return_rate_ci=tuple(_float(v) for v in stats.get("basin_return_rate_ci", (None, None))),
                   position_information=_float(stats.get("position_information")),
                   position_information_p=_float(stats.get("position_information_p")),
                   layout=stats.get("layout"),
                   vocab_size=stats.get("vocab_size"), seq_len=stats.get("seq_len"), n_parameters=n_parameters)

    @property
    def basins_measured(self) -> bool:
        return math.isfinite(self.basin_return_rate)

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
    # True when more samples cannot change the outcome at the confidence the evidence was taken at:
    # a definite verdict, or 'undertrained' by the lower bound of the entropy ratio (the adaptive
    # scan stops on these, memaudit.verdict.sequential); None: True for a definite verdict. A
    # 'generalizing' that more samples could still overturn says False (the position test, below).
    settled: bool | None = None

    def __post_init__(self):
        if self.settled is None:
            object.__setattr__(self, "settled", self.verdict in ("memorizing", "generalizing"))


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
    evidence: dict = field(default_factory=lambda: dict(DEFAULT_EVIDENCE))
    domain: dict = field(default_factory=dict)
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
                       statistics=dict(d.get("statistics", {})),
                       evidence={**DEFAULT_EVIDENCE, **dict(d.get("evidence", {}))},
                       domain=dict(d.get("domain", {})), sha256=sha256)
            th_m, th_g = rule.thresholds["memorizing"], rule.thresholds["generalizing"]
            numbers = [th_m["mean_entropy_max"], th_m["near_zero_sample_fraction_min"],
                       th_g["mean_entropy_min"], th_g["near_zero_sample_fraction_max"], th_g["duplicate_rate_max"],
                       rule.undertrained["entropy_ratio_min"], rule.undertrained["entropy_ratio_soft"],
                       rule.undertrained["fixed_point_fraction_max"],
                       th_g.get("fixed_point_distance_max", 0.0), *rule.evidence.values()]
            for axis in DOMAIN_AXES:
                if axis in rule.domain:
                    lo, hi = rule.domain[axis]
                    numbers += [float(lo), float(hi)]
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
                "confidence": self.confidence, "thresholds": self.thresholds, "undertrained": self.undertrained,
                "evidence": self.evidence, "domain": self.domain}

    # -- the decision -------------------------------------------------------------------------
    def decide(self, ev: Evidence, entropy_only: bool = False) -> Decision:
        """The verdict on `ev`. entropy_only: skip the stored-set evidence (coincidences, basins)
        and the domain check, as the 2026-11 rule did; only the fitting of thresholds uses it."""
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
                            "little, high entropy is not evidence of generalization", settled=True)
        if ev.entropy_ratio >= und["entropy_ratio_soft"] and ev.fixed_point_fraction < und["fixed_point_fraction_max"]:
            return Decision("inconclusive", "undertrained",
                            f"mean entropy {fmt(ev.mean_entropy)} nats is {ev.entropy_ratio:.0%} of ln V and only "
                            f"{ev.fixed_point_fraction:.0%} of samples are fixed points of the model's own greedy "
                            f"dynamics (< {und['fixed_point_fraction_max']:.0%}): samples look like noise to the model")

        low_by_mean = h_hi < th_m["mean_entropy_max"]
        low_by_share = f_lo > th_m["near_zero_sample_fraction_min"]
        repeats, attractors, spread = self._stored_set_evidence(ev)
        locked = self._position_lock(ev)
        outside = self.outside_domain(ev)
        if entropy_only:
            repeats, attractors, outside, locked = "", "", [], ""
            ev = replace(ev, basin_return_rate=math.nan)
        if low_by_mean or low_by_share:
            entropy_says = (f"mean entropy {fmt(ev.mean_entropy)} nats, CI [{fmt(h_lo)}, {fmt(h_hi)}] below "
                            f"{fmt(th_m['mean_entropy_max'])}" if low_by_mean else
                            f"{ev.near_zero_sample_fraction:.0%} of samples have mean entropy < τ = {self.tau:g} "
                            f"(CI lower bound {f_lo:.0%} > {th_m['near_zero_sample_fraction_min']:.0%})")
            if entropy_only:
                return Decision("memorizing", "low_entropy", entropy_says)
            if repeats:
                return Decision("memorizing", "repeated_samples",
                                f"{entropy_says}, and the samples repeat: {repeats}")
            if attractors:
                return Decision("memorizing", "attractor_samples",
                                f"{entropy_says}, and the samples are attractors: {attractors}")
            if locked and ev.layout == "stream":
                return Decision("memorizing", "position_locked_samples",
                                f"{entropy_says}, and the samples keep their tokens at fixed positions: {locked}")
            return Decision("inconclusive", "low_entropy_language",
                            f"{entropy_says}, but the samples are diverse ({spread}): a language whose tokens "
                            "are determined by their neighbours gives the same low entropy as a stored set; "
                            "`memaudit recover` with training data decides")

        gen_by_mean = h_lo > th_g["mean_entropy_min"]
        gen_by_share = f_hi < th_g["near_zero_sample_fraction_max"]
        few_dups = ev.duplicate_rate <= th_g["duplicate_rate_max"]
        stable_max = th_g.get("fixed_point_distance_max")
        if gen_by_mean and gen_by_share and few_dups:
            finite = f"mean entropy {fmt(ev.mean_entropy)} nats, CI [{fmt(h_lo)}, {fmt(h_hi)}] above " \
                     f"{fmt(th_g['mean_entropy_min'])}"
            if repeats or attractors:
                return Decision("inconclusive", "conflicting_signals",
                                f"{finite} looks generalizing, but {repeats or attractors}: a model partway to "
                                "memorizing; `memaudit recover` with training data decides")
            if locked:
                return Decision("inconclusive", "position_locked_samples",
                                f"{finite} looks generalizing, but the samples keep their tokens at fixed "
                                f"positions: {locked}; `memaudit recover` with training data decides"
                                + ("" if ev.layout == "stream" else
                                   " (if every training sequence began at a document start, as with padded "
                                   "sentences, position dependence is expected: pass --layout aligned)"))
            beyond_bound = stable_max is not None and ev.fixed_point_distance > stable_max
            cleared = self._position_clear(ev) if beyond_bound else ""
            if beyond_bound and not cleared:
                return Decision("inconclusive", "unstable_samples",
                                f"{finite} looks generalizing, but the model's greedy dynamics changes "
                                f"{ev.fixed_point_distance:.0%} of the tokens of its own samples (> {stable_max:.0%}): "
                                "its samples are not stable states of the model, as in models partway to memorizing; "
                                "`memaudit recover` with training data decides")
            if ev.basins_measured:
                b_lo, b_hi = ev.basin_return_rate_ci
                if b_hi > self.evidence["basin_return_max"]:
                    return Decision("inconclusive", "conflicting_signals",
                                    f"{finite} looks generalizing, but {ev.basin_return_rate:.0%} of samples come back "
                                    f"whole after re-noising at t = {self.evidence['basin_t']:g} (CI upper bound "
                                    f"{b_hi:.0%} > {self.evidence['basin_return_max']:.0%}); more samples or "
                                    "`memaudit recover` decide")
            elif outside:
                return Decision("inconclusive", "outside_domain",
                                f"{finite}, but the absolute entropy thresholds are validated only for "
                                f"{'; '.join(outside)} and no basin test was run")
            # The position statistic's power grows with the number of samples (per-position
            # entropies of N samples saturate at ln N): a partial memorizer measured 0.054 nats at 32
            # samples and 0.211 at 256. So 'generalizing' is settled (an adaptive scan stops on it)
            # only where the position test finds no dependence at all.
            hint = math.isfinite(ev.position_information_p) and ev.layout != "aligned" \
                and ev.position_information_p <= self.evidence["position_information_p_settle"]
            unstable = "" if not beyond_bound else (
                f"; the greedy dynamics changes {ev.fixed_point_distance:.0%} of the samples' tokens "
                f"(> {stable_max:.0%}), which the position test does not attribute to stored blocks ({cleared})")
            return Decision("generalizing", "finite_entropy",
                            f"{finite}; {ev.near_zero_sample_fraction:.0%} of samples near zero; "
                            f"{ev.entropy_ratio:.0%} of ln V; {spread}{unstable}", settled=not hint)
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

    def _stored_set_evidence(self, ev: Evidence) -> tuple[str, str, str]:
        """(repeats, attractors, spread): what the samples say about a stored set, data-free.
        repeats / attractors are empty strings when that evidence is absent; spread describes the
        samples' diversity for explanations."""
        th = self.evidence
        lo_n, hi_n = ev.distinct_sequences_ci
        repeats = ""
        if ev.colliding_pairs >= th["min_colliding_pairs"]:
            repeats = (f"{ev.colliding_pairs} identical pairs among {ev.n_samples} samples "
                       f"({ev.duplicate_rate:.0%} repeats): they are drawn from about "
                       f"{_count(ev.sample_pairs / ev.colliding_pairs)} sequences "
                       f"(95% CI {_count(lo_n)}–{_count(hi_n)})")
        elif ev.near_pairs is not None and ev.near_pairs >= th["min_near_pairs"]:
            repeats = (f"{ev.near_pairs} pairs among {ev.n_samples} samples differ in at most "
                       f"{th['near_copy_fraction']:.0%} of their tokens ({ev.colliding_pairs} identical): "
                       "near copies of the same stored sequences")
        attractors = ""
        if ev.basins_measured and ev.basin_return_rate_ci[0] > th["basin_return_min"]:
            attractors = (f"{ev.basin_return_rate:.0%} come back whole after re-noising at t = {th['basin_t']:g} "
                          f"(CI lower bound {ev.basin_return_rate_ci[0]:.0%} > {th['basin_return_min']:.0%})")
        spread = f"{ev.colliding_pairs} identical pairs among {ev.n_samples} samples"
        if ev.near_pairs is not None:
            spread += f", {ev.near_pairs} within {th['near_copy_fraction']:.0%} of their tokens"
        if lo_n is not None:
            spread += f", at least {_count(lo_n)} distinct sequences (95%)"
        if ev.basins_measured:
            spread += f"; {ev.basin_return_rate:.0%} return whole after re-noising at t = {th['basin_t']:g}"
        return repeats, attractors, spread

    def _position_lock(self, ev: Evidence) -> str:
        """Why the samples look position-locked (empty when they do not, when it was not measured,
        or when the training sequences were aligned to document starts, where position dependence
        is expected of any model)."""
        th = self.evidence
        if ev.layout == "aligned" or not math.isfinite(ev.position_information):
            return ""
        if ev.position_information > th["position_information_max"] \
                and ev.position_information_p <= th["position_information_p_max"]:
            return (f"a token tells {ev.position_information:.3g} nats about its position (> "
                    f"{th['position_information_max']:g}; shift-permutation p = {ev.position_information_p:.2g}), "
                    "as when a model stores training blocks, whose tokens sit at their stored positions; a model of "
                    "text cut from a stream has ≈ 0")
        return ""

    def _position_clear(self, ev: Evidence) -> str:
        """Why the position test clears the samples of the fixed-point bound (empty when it does
        not). The bound (unstable_samples) was set on partial memorizers, but the greedy dynamics
        also moves the non-modal tokens of a high-entropy language (a Markov chain of V = 128
        generalizing at 1.4 nats: 14 % of tokens); the position test asks the direct question
        (are tokens kept at stored positions?) and, with enough samples for its power
        (position_clear_min_samples) and a layout where its answer means something, no position
        dependence at all (p above position_information_p_settle) clears the samples."""
        th = self.evidence
        if ev.layout == "aligned" or not math.isfinite(ev.position_information_p) \
                or ev.n_samples < th["position_clear_min_samples"] \
                or ev.position_information_p <= th["position_information_p_settle"]:
            return ""
        return (f"a token tells {ev.position_information:.2g} nats about its position, shift-permutation "
                f"p = {ev.position_information_p:.2g} over {ev.n_samples} samples")

    def outside_domain(self, ev: Evidence) -> list[str]:
        """The axes along which the evidence lies outside the rule's validated domain, each as
        'vocabulary 32–2048 (this model: 50257)'. Empty inside it, or for a rule without a domain."""
        out = []
        for axis, value in (("vocab_size", ev.vocab_size), ("seq_len", ev.seq_len),
                            ("n_parameters", ev.n_parameters)):
            bounds = self.domain.get(axis)
            if bounds is None or value is None:
                continue
            lo, hi = bounds
            if not lo <= value <= hi:
                out.append(f"{DOMAIN_AXES[axis]} {_count(lo)}–{_count(hi)} (this model: {_count(value)})")
        return out

    def domain_check(self, ev: Evidence) -> dict:
        """What every report states about the rule's domain and this checkpoint."""
        outside = self.outside_domain(ev)
        return {"validated": {k: v for k, v in self.domain.items() if k in DOMAIN_AXES},
                "inside": not outside, "outside": outside}


DOMAIN_AXES = {"vocab_size": "vocabulary", "seq_len": "sequence length", "n_parameters": "parameters"}
DEFAULT_EVIDENCE = {"min_colliding_pairs": 3, "near_copy_fraction": 0.25, "min_near_pairs": 3,
                    "basin_t": 0.5, "basin_return_min": 0.5, "basin_return_max": 0.25,
                    "position_information_max": 0.1, "position_information_p_max": 0.01,
                    "position_information_p_settle": 0.05, "position_clear_min_samples": 128}
LAYOUTS = ("auto", "stream", "aligned")   # how a model's training sequences were cut (scan --layout)


def _count(x) -> str:
    if x is None:
        return "∞"
    x = float(x)
    return f"{x:,.0f}" if x < 1e6 else f"{x:.2g}"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _float(x) -> float:
    return math.nan if x is None else float(x)


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
FAIL_ON = ("memorizing", "inconclusive", "stored-subset")


def gate_exit_code(verdict: str, fail_on: str = "memorizing", exit_zero: bool = False,
                   stored_found: bool = False) -> int:
    """Exit code of a *completed* scan (errors have their own codes 2/4/5 and never reach here).

    fail_on="memorizing" (default): the code is the verdict's own: generalizing 0 (gate passed),
        memorizing 1 (gate failed), inconclusive 3 (not a pass; a pipeline can tolerate it
        explicitly, e.g. `|| [ $? -eq 3 ]`).
    fail_on="inconclusive": inconclusive also fails the gate and exits 1 like memorizing, for
        pipelines that read 1 as "policy failure" and any other non-zero code as "tool problem".
    fail_on="stored-subset": as "memorizing", and a stored-subset finding (memaudit.stored: the
        data-free search found stored sequences; `stored_found`) fails the gate too, exit 1.
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
    if fail_on == "stored-subset" and stored_found:
        return 1
    return GATE_CODES[verdict]


def list_rules() -> list[Path]:
    """The rule files shipped with memaudit."""
    return sorted(CALIBRATION_DIR.glob("*.json"))
