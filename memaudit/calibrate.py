"""Calibration of the scan's decision rule on reference models of known regime.

    memaudit calibrate --out DIR [--device cuda --workers 16 --deadline 450]   (trains, ~minutes on a GPU)
    memaudit calibrate --from-table memaudit/calibration/calibration_table.parquet --out memaudit/calibration/

1. Sweeps (memaudit.sweep) over the PLAN: ≥ 2 data sources (the synthetic Markov language and
   real text: the standard library's docstrings) × ≥ 2 presets (nano, micro), each over
   training-set sizes from a few sequences to far past the model's capacity.
2. Ground truth per point = the token-recovery verdict (memaudit.recovery): memorizing,
   generalizing, "undertrained" (recovery below the floor in both splits) or "transition"
   (any other inconclusive recovery result, and partial memorization: a memorizing verdict whose
   training recovery falls below FULL_RECALL at some t0 — see `ground_truth`). The scan statistics of the same checkpoint are kept
   per sample, at every candidate t_eval, in the calibration table (one row per point).
3. The rule (memaudit.verdict's structure and decision order) is derived from the table alone,
   deterministically (`derive_rule`):
     - for every candidate (t_eval, τ): thresholds by coordinate-wise search over the observed
       values, minimising (wrong definite verdicts, −correct definite verdicts); "wrong" includes
       a definite verdict on a transition or undertrained point, which must be inconclusive;
       then each threshold is moved to the middle of the interval of values with the same score
       (geometric middle for entropies): the largest margin the data allow;
     - among the (t_eval, τ) with the best score: the smallest t_eval (the paper's t ≈ 0), then τ
       nearest 0.1, unless another choice has a > 25 % wider margin between the classes;
     - min_samples: the smallest sample count (from 16 up) at which the rule, applied to the first
       k samples of every point, still makes no wrong definite verdict (and none at any larger k),
       never below MIN_SAMPLES_FLOOR.
4. Outputs: calibration_table.parquet, recovery_table.parquet, rule.json,
   calibration.json (confusion table, leave-one-sweep-out check, min-samples curve, timings),
   calibration.md, index.html (all plots embedded) and calibration.png — 7 files.
"""
from __future__ import annotations

import hashlib
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import UsageError
from . import __version__

# --------------------------------------------------------------------------------------- the plan
# Real text: the stdlib docstrings (≈1.7 MB): the largest built-in text, the only one big enough for
# a generalizing point. "max" = the whole training pool of the corpus.
SYNTHETIC_SIZES = (8, 32, 128, 512, 2048, 8192, 32768, 131072)
TEXT_SIZES = (8, 32, 128, 512, 2048, "max")
DEFAULT_SOURCES = ("synthetic", "stdlib")
DEFAULT_PRESETS = ("nano", "micro")
DEFAULT_STEPS_CAP = {"synthetic": 6000, "text": 10000}
T_EVAL_CANDIDATES = (1e-5, 0.01, 0.05, 0.1, 0.25)
TAU_CANDIDATES = (0.01, 0.03, 0.1, 0.3)
SAMPLE_COUNTS = (16, 32, 64, 128, 256, 512, 1024)
MIN_SAMPLES_FLOOR = 32   # never trust fewer samples, whatever the reference points allowed
RULE_NAME = "calibrated"

LABELS = ("memorizing", "generalizing", "transition", "undertrained")
VERDICTS = ("memorizing", "generalizing", "inconclusive")


class CalibrationError(UsageError):
    """Bad calibration settings or table (CLI exit code 2)."""


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


# ------------------------------------------------------------------------------- evidence per point
def _point_record(point: dict) -> dict:
    """The per-sample arrays of a point.json document, in the calibration-table layout."""
    return {"t_values": point["scan"]["t_values"], "sample_mean_entropy": point["samples"]["mean_entropy"],
            "duplicate_of": point["samples"]["duplicate_of"], "is_fixed_point": point["samples"]["is_fixed_point"],
            "fixed_point_distance": point["samples"].get("fixed_point_distance"),
            "vocab_size": point["vocab_size"], "scan_seed": point["scan"].get("seed", point["settings"]["seed"])}


def point_stats(point: dict, t_eval: float, tau: float, resamples: int, confidence: float):
    """Scan statistics of a point.json document at another (t_eval, τ, bootstrap) than it was
    scanned with; None when t_eval was not measured."""
    return evidence_stats(_point_record(point), t_eval, tau, resamples, confidence)


def evidence_stats(rec: dict, t_eval: float, tau: float, resamples: int, confidence: float,
                   k: int | None = None) -> dict | None:
    """The statistics the rule reads (verdict.Evidence), from per-sample arrays; the bootstrap is
    the scan's own (`probe.bootstrap_ci`, same seed), so at the scan's settings they are equal to
    the scan's. k: use only the first k samples."""
    from .probe import bootstrap_ci

    t_values = [float(t) for t in rec["t_values"]]
    idx = next((i for i, t in enumerate(t_values) if math.isclose(t, t_eval, rel_tol=1e-9, abs_tol=1e-12)), None)
    if idx is None:
        return None
    h = np.asarray(rec["sample_mean_entropy"][idx], dtype=np.float64)
    dup = np.asarray(rec["duplicate_of"], dtype=np.int64)
    fp = np.asarray(rec["is_fixed_point"], dtype=bool)
    # Tables written before the distance was recorded lack it: NaN switches its threshold off.
    dist = rec.get("fixed_point_distance")
    dist = np.full(fp.shape, np.nan) if dist is None else np.asarray(dist, dtype=np.float64)
    if k is not None:
        h, dup, fp, dist = h[:k], dup[:k], fp[:k], dist[:k]
    near = (h < tau).astype(np.float64)
    ci = bootstrap_ci({"mean_entropy": h, "near_zero_sample_fraction": near}, resamples, confidence,
                      int(rec["scan_seed"]))
    max_h = math.log(int(rec["vocab_size"]))
    mean_h = float(h.mean())
    return {"n_samples": int(h.size), "mean_entropy": mean_h, "mean_entropy_ci": ci["mean_entropy"],
            "max_entropy": max_h, "entropy_ratio": mean_h / max_h,
            "near_zero_sample_fraction": float(near.mean()),
            "near_zero_sample_fraction_ci": ci["near_zero_sample_fraction"],
            "low_entropy_fraction": math.nan, "duplicate_rate": float((dup >= 0).mean()),
            "fixed_point_fraction": float(fp.mean()), "mean_fixed_point_distance": float(dist.mean()),
            "t_eval": float(t_eval), "tau": float(tau)}


# ------------------------------------------------------------------------------- the calibration table
TABLE_COLUMNS = ("data", "preset", "n_train", "steps", "truncated", "final_loss", "vocab_size", "seq_len",
                 "label", "recovery_verdict", "recovery_reason")


def table_rows(points: dict[int, dict], data: str, preset: str) -> list[dict]:
    rows = []
    for n, p in sorted(points.items()):
        rec = _point_record(p)
        row = {"data": data, "preset": preset, "n_train": int(n), "steps": p["training"].get("steps_done"),
               "truncated": bool(p.get("truncated", False)), "final_loss": p["training"].get("final_loss"),
               "vocab_size": int(p["vocab_size"]), "seq_len": int(p["seq_len"]),
               "label": ground_truth(p["recovery"]["verdict"], p["recovery"]["reason"],
                                     [g["train"] for g in p["recovery"]["gaps"]]),
               "recovery_verdict": p["recovery"]["verdict"], "recovery_reason": p["recovery"]["reason"],
               "train_copy_rate": float(p["train_copy_rate"]), "weights": p["weights"],
               "scan_steps": int(p["scan"]["steps"]), "scan_seed": int(rec["scan_seed"]),
               "t_values": [float(t) for t in rec["t_values"]],
               "sample_mean_entropy": [[float(v) for v in row] for row in rec["sample_mean_entropy"]],
               "duplicate_of": [int(v) for v in rec["duplicate_of"]],
               "is_fixed_point": [bool(v) for v in rec["is_fixed_point"]],
               "fixed_point_distance": (None if rec["fixed_point_distance"] is None
                                        else [float(v) for v in rec["fixed_point_distance"]]),
               "raw_scan_verdict": (p.get("scan_raw") or {}).get("verdict"),
               "raw_scan_mean_entropy": (p.get("scan_raw") or {}).get("mean_entropy"),
               "train_seconds": (p.get("timings") or {}).get("train_s"),
               "tokens_per_second": p["training"].get("tokens_per_second")}
        for g in p["recovery"]["gaps"]:
            tag = f"{g['t0']:g}"
            row[f"train_recovery@{tag}"] = g["train"]
            row[f"test_recovery@{tag}"] = g["test"]
            row[f"gap@{tag}"] = g["gap"]
            row[f"gap_lo@{tag}"] = g["gap_ci"][0]
            row[f"gap_hi@{tag}"] = g["gap_ci"][1]
        rows.append(row)
    return rows


def write_table(rows: list[dict], path: Path | None, metadata: dict) -> bytes:
    import pyarrow as pa

    from .report import METADATA_KEY, parquet_bytes

    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()})
    return parquet_bytes(table)


def read_table(path: str | Path) -> tuple[list[dict], dict]:
    import pyarrow.parquet as pq

    from .report import METADATA_KEY

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration table {path} not found")
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise CalibrationError(f"{path}: not a readable Parquet table ({str(e).splitlines()[0]})") from None
    meta = {}
    if table.schema.metadata and METADATA_KEY in table.schema.metadata:
        meta = json.loads(table.schema.metadata[METADATA_KEY])
    rows = table.to_pylist()
    need = {"label", "t_values", "sample_mean_entropy", "duplicate_of", "is_fixed_point", "vocab_size", "scan_seed"}
    if not rows or need - set(rows[0]):
        raise CalibrationError(f"{path}: not a calibration table (needs columns {', '.join(sorted(need))})")
    return rows, meta


# ----------------------------------------------------------------------------------- rule derivation
THRESHOLD_PATHS = {
    "entropy_ratio_min": ("undertrained", "entropy_ratio_min"),
    "entropy_ratio_soft": ("undertrained", "entropy_ratio_soft"),
    "mean_entropy_max": ("thresholds", "memorizing", "mean_entropy_max"),
    "near_zero_sample_fraction_min": ("thresholds", "memorizing", "near_zero_sample_fraction_min"),
    "mean_entropy_min": ("thresholds", "generalizing", "mean_entropy_min"),
    "near_zero_sample_fraction_max": ("thresholds", "generalizing", "near_zero_sample_fraction_max"),
    "duplicate_rate_max": ("thresholds", "generalizing", "duplicate_rate_max"),
    "fixed_point_distance_max": ("thresholds", "generalizing", "fixed_point_distance_max"),
}
GEOMETRIC = {"mean_entropy_max", "mean_entropy_min"}


def _get(rule: dict, name: str) -> float:
    d = rule
    for k in THRESHOLD_PATHS[name]:
        d = d[k]
    return d


def _set(rule: dict, name: str, value: float) -> dict:
    rule = json.loads(json.dumps(rule))
    d = rule
    path = THRESHOLD_PATHS[name]
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = float(value)
    return rule


def _valid(rule: dict) -> bool:
    m, g = rule["thresholds"]["memorizing"], rule["thresholds"]["generalizing"]
    u = rule["undertrained"]
    return (m["mean_entropy_max"] <= g["mean_entropy_min"]
            and g["near_zero_sample_fraction_max"] <= m["near_zero_sample_fraction_min"]
            and u["entropy_ratio_soft"] <= u["entropy_ratio_min"] + 1e-12 and m["mean_entropy_max"] > 0)


def _decide_all(rule: dict, stats: list) -> list[tuple[str, str]]:
    """Decisions of `rule` on every point; stats: statistics dicts or prebuilt verdict.Evidence."""
    from .verdict import Evidence, Rule

    r = Rule.from_dict(rule, origin="candidate rule")
    out = []
    for s in stats:
        d = r.decide(s if isinstance(s, Evidence) else Evidence.from_stats(s))
        out.append((d.verdict, d.reason))
    return out


def score(decisions, labels) -> tuple[int, int]:
    """(wrong definite verdicts, correct definite verdicts)."""
    wrong = correct = 0
    for (verdict, _), label in zip(decisions, labels):
        if verdict == "inconclusive":
            continue
        if verdict == label:
            correct += 1
        else:
            wrong += 1
    return wrong, correct


COUPLED = {"mean_entropy_max": "mean_entropy_min", "mean_entropy_min": "mean_entropy_max",
           "near_zero_sample_fraction_min": "near_zero_sample_fraction_max",
           "near_zero_sample_fraction_max": "near_zero_sample_fraction_min",
           "entropy_ratio_soft": "entropy_ratio_min", "entropy_ratio_min": "entropy_ratio_soft"}


def _breakpoints(name: str, stats: list[dict]) -> list[float]:
    """The values of the statistic a threshold is compared with, across points (where decisions
    can flip), plus one value beyond each end."""
    if name in ("mean_entropy_max", "mean_entropy_min"):
        vals = [v for s in stats for v in s["mean_entropy_ci"]]
    elif name in ("entropy_ratio_min",):
        vals = [s["mean_entropy_ci"][0] / s["max_entropy"] for s in stats]
    elif name == "entropy_ratio_soft":
        vals = [s["entropy_ratio"] for s in stats]
    elif name in ("near_zero_sample_fraction_min", "near_zero_sample_fraction_max"):
        vals = [v for s in stats for v in s["near_zero_sample_fraction_ci"]]
    elif name == "fixed_point_distance_max":
        vals = [s["mean_fixed_point_distance"] for s in stats]
    else:
        vals = [s["duplicate_rate"] for s in stats]
    vals = sorted(set(float(v) for v in vals if math.isfinite(v)))
    if name in GEOMETRIC:
        vals = sorted(set(max(v, 1e-6) for v in vals)) or [0.1, 1.0]
        return [vals[0] / 2] + vals + [vals[-1] * 2]
    vals = vals or [0.5]
    ends = [max(0.0, vals[0] - 0.01)] + vals + [min(1.0, vals[-1] + 0.01)]
    if name in ("entropy_ratio_min", "entropy_ratio_soft", "near_zero_sample_fraction_min",
                "fixed_point_distance_max"):
        ends.append(1.0)
    return sorted(set(ends))


def _middle(name: str, a: float, b: float) -> float:
    return math.sqrt(max(a, 1e-6) * max(b, 1e-6)) if name in GEOMETRIC else (a + b) / 2


def _candidates(name: str, stats: list[dict]) -> list[float]:
    """Threshold values worth trying: one inside every gap between breakpoints."""
    bp = _breakpoints(name, stats)
    return sorted(set(_middle(name, a, b) for a, b in zip(bp, bp[1:])))


def fit_thresholds(stats: list[dict], labels: list[str], base_rule: dict, passes: int = 3,
                   margin_passes: int = 8) -> tuple[dict, tuple]:
    """Coordinate-wise search (see module docstring). → (rule dict, (wrong, correct))."""
    from .verdict import Evidence

    rule = json.loads(json.dumps(base_rule))
    if not _valid(rule):
        raise CalibrationError("the base rule's thresholds are inconsistent")
    evidence = [Evidence.from_stats(s) for s in stats]
    # The stability bound comes first: fitted after the "undertrained" bounds, the search would have
    # reached zero wrong verdicts by declaring generalizing points undertrained, a local optimum that
    # no single threshold change can leave.
    order = ["fixed_point_distance_max", "entropy_ratio_min", "entropy_ratio_soft", "mean_entropy_max",
             "near_zero_sample_fraction_min", "mean_entropy_min", "near_zero_sample_fraction_max", "duplicate_rate_max"]
    cands = {name: _candidates(name, stats) for name in order}

    def objective(r):
        w, c = score(_decide_all(r, evidence), labels)
        return (w, -c)

    best = objective(rule)
    for _ in range(passes):
        changed = False
        for name in order:
            for v in cands[name]:
                trial = _set(rule, name, v)
                if not _valid(trial):
                    continue
                obj = objective(trial)
                if obj < best:
                    best, rule, changed = obj, trial, True
        if not changed:
            break
    # Largest margin: move every threshold to the middle of its interval of equally good values.
    # Repeated, so coupled pairs (mean_entropy_max ≤ mean_entropy_min, and the two near-zero shares)
    # settle at the thirds of the gap between the classes rather than crowding one side.
    # The two memorizing criteria are alternatives (either one suffices): a threshold's interval is
    # measured with its alternative switched off when the criterion can do the job alone, so that it
    # keeps a margin of its own instead of leaning on the other.
    alternative = {"mean_entropy_max": ("near_zero_sample_fraction_min", 1.0),
                   "near_zero_sample_fraction_min": ("mean_entropy_max", 1e-9)}
    # Where another criterion decides every point, the mean-entropy bounds change no decision over a
    # wide interval, and its middle can fall below the memorizers' own entropies. When mean entropy
    # separates the clear classes by itself, keep both bounds between them: above every memorizing
    # point's CI, below every generalizing point's (the thirds of that gap, if that scores the same).
    clear_band = _clear_entropy_band(stats, labels)
    if clear_band is not None:
        lo, hi = clear_band
        trial = _set(_set(rule, "mean_entropy_max", _round(lo ** (2 / 3) * hi ** (1 / 3))),
                     "mean_entropy_min", _round(lo ** (1 / 3) * hi ** (2 / 3)))
        if _valid(trial) and objective(trial) == best:
            rule = trial
        else:
            clear_band = None
    for name in order * margin_passes:
        current = _get(rule, name)
        base = rule
        if name in alternative:
            other, off = alternative[name]
            alone = _set(rule, other, off)
            if _valid(alone) and objective(alone) == best:
                base = alone
        bp = _breakpoints(name, stats)
        if name in COUPLED:
            bp = sorted(set(bp + [_get(rule, COUPLED[name])]))
        bp = sorted(set(bp + [current]))
        if clear_band is not None and name in GEOMETRIC:
            bp = sorted({v for v in bp if clear_band[0] <= v <= clear_band[1]} | set(clear_band))
        gaps = list(zip(bp, bp[1:]))
        good = []
        for a, b in gaps:
            trial = _set(base, name, _middle(name, a, b))
            good.append(_valid(trial) and objective(trial) == best)
        # the gap(s) touching the current value
        inside = [k for k, (a, b) in enumerate(gaps) if a <= current <= b and good[k]]
        if not inside:
            continue
        lo, hi = min(inside), max(inside)
        while lo > 0 and good[lo - 1]:
            lo -= 1
        while hi < len(gaps) - 1 and good[hi + 1]:
            hi += 1
        trial = _set(rule, name, _round(_middle(name, gaps[lo][0], gaps[hi][1])))
        if _valid(trial) and objective(trial) == best:
            rule = trial
    return rule, (best[0], -best[1])


def _clear_entropy_band(stats: list[dict], labels: list[str]) -> tuple[float, float] | None:
    """(highest CI upper bound of a memorizing point, lowest CI lower bound of a generalizing
    point) when the first lies below the second; else None."""
    mem = [s["mean_entropy_ci"][1] for s, label in zip(stats, labels) if label == "memorizing"]
    gen = [s["mean_entropy_ci"][0] for s, label in zip(stats, labels) if label == "generalizing"]
    if not mem or not gen:
        return None
    lo, hi = max(max(mem), 1e-6), min(gen)
    return (lo, hi) if lo < hi else None


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def base_rule() -> dict:
    from .verdict import CALIBRATION_DIR

    rule = json.loads((CALIBRATION_DIR / "provisional.json").read_text())
    # The provisional rule has no stability criterion; the search starts from "off" (every share ≤ 1).
    rule["thresholds"]["generalizing"].setdefault("fixed_point_distance_max", 1.0)
    return rule


def derive_rule(rows: list[dict], t_candidates=None, tau_candidates=TAU_CANDIDATES, resamples: int = 1000,
                confidence: float = 0.95, source: str = "", log=None, require_both: bool = True) -> tuple[dict, dict]:
    """The calibrated rule from the calibration table. → (rule dict, report dict)."""
    log = log or (lambda msg: None)
    if t_candidates is None:
        common = set(float(t) for t in rows[0]["t_values"])
        for r in rows[1:]:
            common &= set(float(t) for t in r["t_values"])
        t_candidates = sorted(common)
    labels = [r["label"] for r in rows]
    missing = [k for k in ("memorizing", "generalizing") if k not in labels]
    if missing and require_both:
        raise CalibrationError(f"the calibration table has no {' and no '.join(missing)} point (by token recovery); "
                               "a rule cannot be calibrated without both regimes — train longer or add sizes")
    start = base_rule()
    trials, fitted = [], []
    for t in t_candidates:
        for tau in tau_candidates:
            stats = [evidence_stats(r, t, tau, resamples, confidence) for r in rows]
            if any(s is None for s in stats):
                continue
            rule0 = {**start, "t_eval": float(t), "tau": float(tau), "bootstrap_resamples": resamples,
                     "confidence": confidence}
            rule, (wrong, correct) = fit_thresholds(stats, labels, rule0)
            margin = _margin(stats, labels, rule)
            trials.append({"t_eval": t, "tau": tau, "wrong": wrong, "correct": correct, "margin": margin})
            fitted.append(((wrong, -correct), margin, t, tau, rule, stats))
            log(f"t_eval={t:g} tau={tau:g}: wrong={wrong} correct={correct} margin={margin:.3f}")
    if not fitted:
        raise CalibrationError("no candidate t_eval was measured at every point of the table")
    # Fewest wrong, then most correct verdicts; among those, the paper's t ≈ 0 (the smallest t_eval)
    # and τ nearest 0.1 unless another choice separates the classes clearly better (its margin,
    # in log-entropy units, beats theirs by more than a quarter).
    top = min(f[0] for f in fitted)
    contenders = [f for f in fitted if f[0] == top]
    widest = max(f[1] for f in contenders)
    near = [f for f in contenders if f[1] >= 0.8 * widest] if widest > 0 else contenders
    choice = min(near, key=lambda f: (f[2], abs(math.log(f[3] / 0.1)), -f[1]))
    best = (None, choice[4], choice[5])
    _, rule, stats = best
    decisions = _decide_all(rule, stats)
    curve, min_samples = sample_count_curve(rows, rule, labels)
    rule["min_samples"] = int(min_samples)
    rule.update(name=RULE_NAME, version=1, status="calibrated", source=source,
                description=("Derived by memaudit calibrate from reference models of known regime (token recovery "
                             "as ground truth); see docs/calibration.md."),
                sampler={"steps": sorted({int(r["scan_steps"]) for r in rows}), "final": "greedy",
                         "start": "uniform noise at t=1"})
    final_decisions = _decide_all(rule, stats)
    report = {"trials": trials, "decisions": [
        {"data": r["data"], "preset": r["preset"], "n_train": r["n_train"], "label": r["label"],
         "verdict": v, "reason": why, "mean_entropy": s["mean_entropy"], "mean_entropy_ci": s["mean_entropy_ci"],
         "entropy_ratio": s["entropy_ratio"], "near_zero_sample_fraction": s["near_zero_sample_fraction"],
         "duplicate_rate": s["duplicate_rate"], "fixed_point_fraction": s["fixed_point_fraction"],
         "mean_fixed_point_distance": s["mean_fixed_point_distance"],
         "train_recovery": _recovery_list(r, "train"), "test_recovery": _recovery_list(r, "test"),
         "truncated": bool(r.get("truncated", False))}
        for r, s, (v, why) in zip(rows, stats, final_decisions)],
        "confusion": confusion(labels, final_decisions), "sample_count_curve": curve,
        "score": dict(zip(("wrong", "correct"), score(final_decisions, labels)))}
    assert decisions is not None
    return rule, report


def _recovery_list(row: dict, split: str) -> list[float]:
    """A table row's recovery rates of one split, in t0 order."""
    keys = sorted((float(k.split("@")[1]), k) for k in row if k.startswith(f"{split}_recovery@"))
    return [row[k] for _, k in keys]


def _margin(stats, labels, rule) -> float:
    """Smallest log-distance between the mean-entropy thresholds and the clear points' CIs."""
    m = rule["thresholds"]["memorizing"]["mean_entropy_max"]
    g = rule["thresholds"]["generalizing"]["mean_entropy_min"]
    dists = []
    for s, label in zip(stats, labels):
        lo, hi = (max(v, 1e-6) for v in s["mean_entropy_ci"])
        if label == "memorizing":
            dists.append(math.log(m / hi))
        elif label == "generalizing":
            dists.append(math.log(lo / g))
    return float(min(dists)) if dists else 0.0


def confusion(labels, decisions) -> dict:
    table = {label: {v: 0 for v in VERDICTS} for label in LABELS}
    for label, (verdict, _) in zip(labels, decisions):
        table.setdefault(label, {v: 0 for v in VERDICTS})[verdict] += 1
    return table


def sample_count_curve(rows, rule, labels) -> tuple[list[dict], int]:
    """Wrong / correct verdicts when every point is judged on its first k samples only."""
    n_min = min(len(r["duplicate_of"]) for r in rows)
    ks = [k for k in SAMPLE_COUNTS if k < n_min] + [n_min]
    curve = []
    for k in ks:
        stats = [evidence_stats(r, rule["t_eval"], rule["tau"], rule["bootstrap_resamples"], rule["confidence"], k=k)
                 for r in rows]
        test_rule = {**rule, "min_samples": 1}
        w, c = score(_decide_all(test_rule, stats), labels)
        curve.append({"samples": k, "wrong": w, "correct": c})
    min_samples = n_min
    for entry in reversed(curve):
        if entry["wrong"] > 0:
            break
        min_samples = entry["samples"]
    return curve, max(MIN_SAMPLES_FLOOR, min_samples)


def leave_one_sweep_out(rows: list[dict], rule: dict, log=None) -> dict:
    """Re-derive the thresholds (at the chosen t_eval and τ) without one sweep, judge that sweep."""
    sweeps = sorted({(r["data"], r["preset"]) for r in rows})
    out = {}
    for held in sweeps:
        train_rows = [r for r in rows if (r["data"], r["preset"]) != held]
        test_rows = [r for r in rows if (r["data"], r["preset"]) == held]
        if not train_rows or not test_rows:
            continue
        if not {"memorizing", "generalizing"} <= {r["label"] for r in train_rows}:
            out[f"{held[0]}·{held[1]}"] = {"skipped": "the other sweeps lack a memorizing or a generalizing point",
                                           "n": len(test_rows), "wrong": None, "correct": None}
            continue
        args = (rule["t_eval"], rule["tau"], rule["bootstrap_resamples"], rule["confidence"])
        stats_train = [evidence_stats(r, *args) for r in train_rows]
        fitted, _ = fit_thresholds(stats_train, [r["label"] for r in train_rows], {**rule, "min_samples": 1})
        stats_test = [evidence_stats(r, *args) for r in test_rows]
        labels = [r["label"] for r in test_rows]
        dec = _decide_all(fitted, stats_test)
        w, c = score(dec, labels)
        out[f"{held[0]}·{held[1]}"] = {"wrong": w, "correct": c, "n": len(test_rows),
                                       "confusion": confusion(labels, dec)}
        if log:
            log(f"leave out {held[0]}·{held[1]}: wrong={w} correct={c} of {len(test_rows)}")
    return out


# ------------------------------------------------------------------------------------- outputs
def confusion_markdown(conf: dict) -> str:
    lines = ["| recovery ground truth \\ scan verdict | " + " | ".join(VERDICTS) + " |",
             "|---|" + "---|" * len(VERDICTS)]
    for label in LABELS:
        if label in conf and sum(conf[label].values()):
            lines.append(f"| {label} | " + " | ".join(str(conf[label][v]) for v in VERDICTS) + " |")
    return "\n".join(lines)


def report_markdown(rule: dict, report: dict) -> str:
    """The rule, its measured accuracy and the per-point decisions, as Markdown (calibration.md)."""
    th_m, th_g, und = rule["thresholds"]["memorizing"], rule["thresholds"]["generalizing"], rule["undertrained"]
    n_clear = sum(1 for d in report["decisions"] if d["label"] in ("memorizing", "generalizing"))
    lines = ["# memaudit calibration result", "",
             f"Generated by `{rule['source']}`.", "",
             "## Rule", "",
             "| field | value |", "|---|---|",
             f"| name / status | {rule['name']} / {rule['status']} |",
             "| statistic | per-sample mean conditional entropy of x̂ on the model's own samples (nats) |",
             f"| t_eval | {rule['t_eval']:g} |", f"| τ (near-zero) | {rule['tau']:g} nats |",
             f"| min_samples | {rule['min_samples']} |",
             f"| confidence / bootstrap | {rule['confidence']:g} / {rule['bootstrap_resamples']} resamples |",
             f"| memorizing | mean-entropy CI upper bound < {th_m['mean_entropy_max']:g}, or share of samples with "
             f"mean H < τ: CI lower bound > {th_m['near_zero_sample_fraction_min']:g} |",
             f"| generalizing | mean-entropy CI lower bound > {th_g['mean_entropy_min']:g}, near-zero share CI upper "
             f"bound < {th_g['near_zero_sample_fraction_max']:g}, duplicates ≤ {th_g['duplicate_rate_max']:g}"
             + (f", mean distance from fixed points ≤ {th_g['fixed_point_distance_max']:g} (else inconclusive: "
                "unstable_samples)" if th_g.get("fixed_point_distance_max", 1.0) < 1.0 else "") + " |",
             f"| undertrained (inconclusive) | H̄/ln V CI lower bound ≥ {und['entropy_ratio_min']:g}, or H̄/ln V ≥ "
             f"{und['entropy_ratio_soft']:g} with fixed points < {und['fixed_point_fraction_max']:g} |",
             "", "## Confusion (recovery ground truth × scan verdict)", "", confusion_markdown(report["confusion"]),
             "", f"Wrong definite verdicts: {report['score']['wrong']}; correct definite verdicts: "
             f"{report['score']['correct']} of {n_clear} clear points.", ""]
    loso = report.get("leave_one_sweep_out") or {}
    if loso:
        lines += ["## Leave one sweep out", "", "Thresholds re-derived without the sweep, then applied to it.", "",
                  "| held-out sweep | points | wrong | correct |", "|---|---|---|---|"]
        for k, v in sorted(loso.items()):
            wrong = v["wrong"] if v["wrong"] is not None else "–"
            correct = v["correct"] if v["correct"] is not None else v.get("skipped", "–")
            lines.append(f"| {k} | {v['n']} | {wrong} | {correct} |")
        lines.append("")
    lines += ["## Sample count", "", "| samples per point | wrong | correct |", "|---|---|---|"]
    lines += [f"| {c['samples']} | {c['wrong']} | {c['correct']} |" for c in report["sample_count_curve"]]
    lines += ["", "## Points", "",
              "| data | preset | n_train | ground truth | train recovery (t0 = 0.05 … 0.5) | test recovery | scan "
              "| reason | mean H (95% CI) | H/ln V | near-zero | dup | fixed pts | fixed-pt distance |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in sorted(report["decisions"], key=lambda d: (d["data"], d["preset"], d["n_train"])):
        lo, hi = d["mean_entropy_ci"]
        flag = " (cut)" if d.get("truncated") else ""
        rates = " | ".join("/".join("–" if v is None else f"{v:.2f}" for v in d.get(k) or []) or "–"
                           for k in ("train_recovery", "test_recovery"))
        lines.append(f"| {d['data']} | {d['preset']} | {d['n_train']}{flag} | {d['label']} | {rates} | {d['verdict']} | "
                     f"{d['reason']} | {d['mean_entropy']:.3g} [{lo:.3g}, {hi:.3g}] | {d['entropy_ratio']:.2f} | "
                     f"{d['near_zero_sample_fraction']:.2f} | {d['duplicate_rate']:.2f} | "
                     f"{d['fixed_point_fraction']:.2f} | {d.get('mean_fixed_point_distance', math.nan):.3f} |")
    return "\n".join(lines) + "\n"


def calibration_figures(rows: list[dict], report: dict, rule: dict, recovery_table) -> dict[str, bytes]:
    """calibration.png: the rule's statistic against the ground truth (top), and each sweep's train /
    test recovery curves (below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .sweep import VERDICT_COLORS, _png

    sweeps = sorted({(r["data"], r["preset"]) for r in rows})
    nrows = -(-len(sweeps) // 2) or 1
    fig = plt.figure(figsize=(13, 4.8 + 4.2 * nrows))
    grid = fig.add_gridspec(1 + nrows, 2, height_ratios=[4.8] + [4.2] * nrows)

    dec = report["decisions"]
    label_colors = {"memorizing": VERDICT_COLORS["memorizing"], "generalizing": VERDICT_COLORS["generalizing"],
                    "transition": "#f39c12", "undertrained": "#8e44ad"}
    a1, a2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    for i, d in enumerate(sorted(dec, key=lambda d: (d["label"], d["mean_entropy"]))):
        lo, hi = d["mean_entropy_ci"]
        h = d["mean_entropy"]
        a1.errorbar(i, max(h, 1e-5), yerr=[[max(h - lo, 0)], [max(hi - h, 0)]], fmt="o",
                    color=label_colors.get(d["label"], "k"))
        a2.scatter(d["entropy_ratio"], d["near_zero_sample_fraction"], color=label_colors.get(d["label"], "k"),
                   marker={"memorizing": "v", "generalizing": "^", "inconclusive": "o"}[d["verdict"]], s=40)
    a1.axhline(rule["thresholds"]["memorizing"]["mean_entropy_max"], color=VERDICT_COLORS["memorizing"], ls=":")
    a1.axhline(rule["thresholds"]["generalizing"]["mean_entropy_min"], color=VERDICT_COLORS["generalizing"], ls=":")
    a1.set_yscale("log")
    a1.set_ylabel(f"mean entropy at t_eval={rule['t_eval']:g} (nats, 95% CI)")
    a1.set_xlabel("points, sorted by ground truth")
    a1.set_title("Scan statistic by ground truth (dotted: thresholds)")
    a1.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=lab) for lab, c in label_colors.items()]
    a1.legend(handles=handles, fontsize=7)
    a2.set_xlabel("mean entropy / ln V")
    a2.set_ylabel(f"samples with mean H < τ={rule['tau']:g}")
    a2.set_title("colour: ground truth · marker: scan verdict (▼ memorizing, ▲ generalizing, ● inconclusive)",
                 fontsize=9)
    a2.grid(alpha=0.3)

    cmap = plt.get_cmap("viridis")
    for k, (data, preset) in enumerate(sweeps):
        ax = fig.add_subplot(grid[1 + k // 2, k % 2])
        d = recovery_table[(recovery_table["data"] == data) & (recovery_table["preset"] == preset)]
        t0s = sorted(d["t0"].unique())
        for i, t0 in enumerate(t0s):
            color = cmap(i / max(1, len(t0s) - 1) * 0.9)
            for split, style in (("train", "-"), ("test", "--")):
                e = d[(d["t0"] == t0) & (d["split"] == split)].sort_values("n_train")
                ax.plot(e["n_train"], e["recovery_rate"], "o" + style, color=color, label=f"{split} {t0:g}")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"Token recovery, train (solid) vs held-out (dashed): {data} · {preset}", fontsize=10)
        ax.set_xlabel("n_train")
        ax.set_ylabel("recovery rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return {"calibration.png": _png(fig)}


def regenerate(table_path: str | Path, out: str | Path, command: str | None = None, log=None) -> dict:
    """Derive rule.json + calibration.json (+ index.html, figures) from a calibration table."""
    from .report import json_bytes, write_files

    log = log or (lambda msg: None)
    rows, meta = read_table(table_path)
    raw = Path(table_path).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    command = command or " ".join(shlex.quote(a) for a in ["memaudit", *sys.argv[1:]])
    source = (f"{command} (table {Path(table_path).name} sha256 {sha[:16]}; table produced by: "
              f"{meta.get('command', 'unknown')})")
    try:
        rule, report = derive_rule(rows, source=source, log=log)
    except CalibrationError as e:
        # No rule, but the sweeps' plots and the table summary still help to see why.
        _write_without_rule(rows, table_path, out, str(e))
        raise
    report["leave_one_sweep_out"] = leave_one_sweep_out(rows, rule, log=log)
    report["table"] = {"file": Path(table_path).name, "sha256": sha, "rows": len(rows), "produced_by": meta}
    report["rule"] = rule
    report["memaudit_version"] = __version__
    out = Path(out)
    files = {"rule.json": json_bytes(rule), "calibration.json": json_bytes(report),
             "calibration.md": report_markdown(rule, report).encode()}
    recovery_path = Path(table_path).with_name("recovery_table.parquet")
    if recovery_path.exists():
        import pandas as pd

        from .sweep import index_html, sweep_figures

        recovery_table = pd.read_parquet(recovery_path)
        figures = calibration_figures(rows, report, rule, recovery_table)
        files.update(figures)
        shown = dict(figures)
        for (data, preset), part in recovery_table.groupby(["data", "preset"], sort=True):
            for name, png in sweep_figures(part, title=f"{data} · {preset}").items():
                shown[f"{data}·{preset}: {name}"] = png
        extra = ("<h2>Confusion (recovery ground truth × scan verdict)</h2><pre>"
                 + confusion_markdown(report["confusion"]) + "</pre><h2>Rule</h2><pre>"
                 + json.dumps(rule, indent=2) + "</pre>")
        files["index.html"] = index_html("memaudit calibration", shown, recovery_table, None, extra).encode()
    return {"files": write_files(out, files), "rule": rule, "report": report}


def _write_without_rule(rows, table_path, out, message: str) -> None:
    import html

    from .report import json_bytes, write_files

    recovery_path = Path(table_path).with_name("recovery_table.parquet")
    points = [{k: r.get(k) for k in ("data", "preset", "n_train", "steps", "truncated", "label", "recovery_reason",
                                      "train_seconds", "tokens_per_second")} for r in rows]
    files = {"calibration.json": json_bytes({"error": message, "points": points, "memaudit_version": __version__})}
    if recovery_path.exists():
        import pandas as pd

        from .sweep import index_html, sweep_figures

        recovery_table = pd.read_parquet(recovery_path)
        shown = {}
        for (data, preset), part in recovery_table.groupby(["data", "preset"], sort=True):
            for name, png in sweep_figures(part, title=f"{data} · {preset}").items():
                shown[f"{data}·{preset}: {name}"] = png
        files["index.html"] = index_html("memaudit calibration (no rule)", shown, recovery_table, None,
                                         f"<p><b>No rule:</b> {html.escape(message)}</p>").encode()
    write_files(out, files)


# ------------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class CalibrationPlan:
    sources: tuple[str, ...] = DEFAULT_SOURCES
    presets: tuple[str, ...] = DEFAULT_PRESETS
    synthetic_sizes: tuple = SYNTHETIC_SIZES
    text_sizes: tuple = TEXT_SIZES
    steps_scale: float = 1.0
    synthetic_cap: int = DEFAULT_STEPS_CAP["synthetic"]
    text_cap: int = DEFAULT_STEPS_CAP["text"]
    recover_n: int = 256
    steps_per_unit: int = 100
    scan_samples: int = 256
    scan_steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    skip: tuple[str, ...] = ()        # 'source:preset' pairs of the cross product left out (CPU budgets)

    def sweeps(self):
        from .data import load_corpus
        from .sweep import SweepSettings

        out = []
        for source in self.sources:
            text = source != "synthetic"
            sizes = self.text_sizes if text else self.synthetic_sizes
            if any(s == "max" for s in sizes) or text:
                corpus = load_corpus(source)
                cap = corpus.max_train
                sizes = tuple(sorted({min(int(cap if s == "max" else s), cap or int(s)) for s in sizes}))
            for preset in self.presets:
                if f"{source}:{preset}" in self.skip:
                    continue
                out.append(SweepSettings(
                    sizes=tuple(int(s) for s in sizes), data=source, preset=preset, steps="auto",
                    steps_scale=self.steps_scale, steps_cap=self.text_cap if text else self.synthetic_cap,
                    recover_n=self.recover_n, steps_per_unit=self.steps_per_unit, scan_samples=self.scan_samples,
                    scan_steps=self.scan_steps, scan_raw=True,
                    t_profile=tuple(t for t in T_EVAL_CANDIDATES if t != 1e-5), seed=self.seed, device=self.device))
        return out


def run_calibration(plan: CalibrationPlan, out: str | Path, work: str | Path, workers: int = 1,
                    deadline_s: float | None = None, show_progress: bool | None = None, command: str = "",
                    log=None) -> dict:
    """Run the sweeps of the plan (all points in one pool), then derive and write the rule."""
    import pandas as pd

    from .report import write_files
    from .sweep import (SweepView, _prepare_corpus, build_table, load_points, point_finished, run_jobs,
                        write_outputs)

    log = log or (lambda msg: None)
    started = time.perf_counter()
    work = Path(work)
    sweeps = plan.sweeps()
    jobs, reused = [], []
    for s in sweeps:
        s.validate()
        _prepare_corpus(s)
        sdir = work / f"{s.data}-{s.preset}"
        sdir.mkdir(parents=True, exist_ok=True)
        done = [n for n in s.sizes if point_finished(sdir, s, n)]
        reused.append((s, done))
        jobs += [(s, sdir, n) for n in s.sizes if n not in done]
        log(f"sweep {s.data}·{s.preset}: sizes {list(s.sizes)} steps {s.schedule()} ({len(done)} reused)")
    total_steps = sum(s.schedule()[n] for s, _, n in jobs)
    log(f"{len(jobs)} points to train, {total_steps} optimizer steps in all, {workers} workers on {plan.device}")
    view = SweepView(reused, enabled=show_progress)
    with view:
        failed, skipped = run_jobs(jobs, workers, view, started, deadline_s)
    train_wall = time.perf_counter() - started
    rows, tables = [], []
    for s in sweeps:
        sdir = work / f"{s.data}-{s.preset}"
        points = load_points(sdir, s, include_truncated=True)
        if not points:
            continue
        table = build_table(points, s)
        write_outputs(sdir, s, points, table, plots=True)
        tables.append(table)
        rows += table_rows(points, s.data, s.preset)
    if not rows:
        raise CalibrationError("no sweep point finished; nothing to calibrate")
    recovery_table = pd.concat(tables, ignore_index=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "memaudit_version": __version__, "plan": _plan_dict(plan), "workers": workers,
            "deadline_s": deadline_s, "train_wall_seconds": train_wall,
            "failed": {"/".join(map(str, k)): v for k, v in failed.items()},
            "skipped": ["/".join(map(str, k)) for k in skipped]}
    from .sweep import table_bytes

    write_files(out, {"calibration_table.parquet": write_table(rows, None, meta),
                      "recovery_table.parquet": table_bytes(recovery_table, meta)})
    result = regenerate(out / "calibration_table.parquet", out, command=command, log=log)
    log(f"calibration finished in {time.perf_counter() - started:.0f} s (training phase {train_wall:.0f} s)")
    return result


def _plan_dict(plan: CalibrationPlan) -> dict:
    from dataclasses import asdict

    d = asdict(plan)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def plan_from_options(sources, presets, synthetic_sizes, text_sizes, **kw) -> CalibrationPlan:
    plan = CalibrationPlan(**kw)
    if sources:
        plan = replace(plan, sources=tuple(sources))
    if presets:
        plan = replace(plan, presets=tuple(presets))
    if synthetic_sizes:
        plan = replace(plan, synthetic_sizes=tuple(synthetic_sizes))
    if text_sizes:
        plan = replace(plan, text_sizes=tuple(text_sizes))
    pairs = {f"{s}:{p}" for s in plan.sources for p in plan.presets}
    unknown = [k for k in plan.skip if k not in pairs]
    if unknown:
        raise CalibrationError(f"--skip {','.join(unknown)}: not a source:preset pair of this plan "
                               f"({', '.join(sorted(pairs))})")
    if len(pairs - set(plan.skip)) == 0:
        raise CalibrationError("--skip leaves no sweep to run")
    return plan
