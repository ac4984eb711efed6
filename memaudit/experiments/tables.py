"""The sweep's tidy table (one row per size × split × t0) and the re-judging of stored points: the
scan verdict under the current rule (memaudit.stats.record_statistics on a point's per-sample
arrays when the rule reads another t_eval, τ or bootstrap) and the recovery rule on the stored
summaries, so a newly calibrated rule applies to finished sweeps without re-evaluating them.
"""
from __future__ import annotations

import json
import math

from .settings import SweepSettings


def point_record(point: dict) -> dict:
    """The per-sample arrays of a point.json document, in the calibration-table layout that
    memaudit.stats.record_statistics reads."""
    return {"t_values": point["scan"]["t_values"], "sample_mean_entropy": point["samples"]["mean_entropy"],
            "duplicate_of": point["samples"]["duplicate_of"], "is_fixed_point": point["samples"]["is_fixed_point"],
            "fixed_point_distance": point["samples"].get("fixed_point_distance"),
            "basin_agreement": point["samples"].get("basin_agreement"),
            "near_copies_earlier": point["samples"].get("near_copies_earlier"),
            "near_copy_fraction": point["samples"].get("near_copy_fraction"),
            "sample_tokens": point["samples"].get("tokens"),
            "layout": point["scan"]["stats"].get("layout"),
            "vocab_size": point["vocab_size"], "seq_len": point.get("seq_len"),
            "n_parameters": point.get("n_parameters"),
            "scan_seed": point["scan"].get("seed", point["settings"]["seed"])}


def current_scan_decision(point: dict, rule=None) -> tuple[str, str]:
    """The scan verdict of a point under `rule` (default: the scan's default rule), recomputed from
    the stored statistics (at another t_eval, τ or bootstrap: from its per-sample arrays), so a
    newly calibrated rule applies to finished sweeps."""
    from ..stats import record_statistics
    from ..verdict import Evidence, load_rule

    rule = load_rule(rule)
    stats = point["scan"]["stats"]
    if not math.isclose(stats["t_eval"], rule.t_eval) or not math.isclose(stats["tau"], rule.tau) \
            or point["scan"].get("bootstrap_resamples") != rule.bootstrap_resamples \
            or not math.isclose(point["scan"].get("confidence", rule.confidence), rule.confidence):
        stats = record_statistics(point_record(point), rule.t_eval, rule.tau, rule.bootstrap_resamples,
                                  rule.confidence)
        if stats is None:
            return "inconclusive", "rule_mismatch"
    d = rule.decide(Evidence.from_stats(stats, steps=point["scan"].get("steps"), n_parameters=point.get("n_parameters")))
    return d.verdict, d.reason


def current_recovery_decision(point: dict) -> tuple[str, str]:
    """The verdict of the recovery rule (memaudit.verdict.RECOVERY_RULE) on a point's stored
    summaries and gaps (so a change of the rule needs no re-evaluation)."""
    from ..verdict import RECOVERY_RULE

    summaries, gaps = point["recovery"]["summaries"], point["recovery"]["gaps"]
    # Points from before the summaries recorded it: the corrupted share × the sequence length.
    summaries = [{"mean_corrupted_tokens": s.get("mean_corrupted_fraction", math.inf) * point.get("seq_len", 1), **s}
                 for s in summaries]
    d = RECOVERY_RULE.decide(summaries, gaps)
    return d.verdict, d.reason


def build_table(points: dict[int, dict], settings: SweepSettings, rule=None):
    """Tidy table: one row per size × split × t0, with the point's scan and training columns."""
    import pandas as pd

    rows = []
    for n in sorted(points):
        p = points[n]
        verdict, reason = current_scan_decision(p, rule)
        p["scan_verdict_current"], p["scan_reason_current"] = verdict, reason
        p["recovery"]["verdict"], p["recovery"]["reason"] = current_recovery_decision(p)
        st = p["scan"]["stats"]
        gaps = {round(g["t0"], 9): g for g in p["recovery"]["gaps"]}
        base = {"data": settings.data, "preset": settings.preset, "n_train": n,
                "steps": p["training"].get("steps_done"), "final_loss": p["training"].get("final_loss"),
                "vocab_size": p["vocab_size"], "seq_len": p["seq_len"], "weights": p["weights"],
                "recovery_verdict": p["recovery"]["verdict"], "recovery_reason": p["recovery"]["reason"],
                "scan_verdict": verdict, "scan_reason": reason,
                "scan_mean_entropy": st["mean_entropy"], "scan_mean_entropy_lo": st["mean_entropy_ci"][0],
                "scan_mean_entropy_hi": st["mean_entropy_ci"][1], "scan_entropy_ratio": st["entropy_ratio"],
                "scan_low_entropy_fraction": st["low_entropy_fraction"],
                "scan_near_zero_sample_fraction": st["near_zero_sample_fraction"],
                "scan_duplicate_rate": st["duplicate_rate"], "scan_fixed_point_fraction": st["fixed_point_fraction"],
                "scan_mean_fixed_point_distance": st.get("mean_fixed_point_distance", math.nan),
                "scan_t_eval": st["t_eval"], "scan_tau": st["tau"], "scan_samples": st["n_samples"],
                "scan_train_copy_rate": p["train_copy_rate"],
                "raw_scan_verdict": (p.get("scan_raw") or {}).get("verdict"),
                "raw_scan_mean_entropy": (p.get("scan_raw") or {}).get("mean_entropy")}
        for s in p["recovery"]["summaries"]:
            g = gaps.get(round(s["t0"], 9), {})
            rows.append({**base, "split": s["split"], "t0": s["t0"], "recovery_steps": s["steps"],
                         "recovery_rate": s["recovery_rate"], "recovery_rate_lo": s["recovery_rate_ci"][0],
                         "recovery_rate_hi": s["recovery_rate_ci"][1], "unstable_rate": s["unstable_rate"],
                         "exact_match": s["exact_match"], "n_examples": s["n"],
                         "entropy_recovered": s["entropy_recovered"], "entropy_stable": s["entropy_stable"],
                         "entropy_unstable": s["entropy_unstable"], "entropy_failed": s["entropy_failed"],
                         "gap": g.get("gap"), "gap_lo": (g.get("gap_ci") or [None])[0],
                         "gap_hi": (g.get("gap_ci") or [None, None])[1]})
    columns = ["data", "preset", "n_train", "steps", "split", "t0", "recovery_rate"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def table_bytes(table, metadata: dict) -> bytes:
    """Parquet bytes of a table (a pandas DataFrame or a pyarrow Table), `metadata` stored as JSON
    under memaudit.report.METADATA_KEY."""
    import pyarrow as pa

    from ..report import METADATA_KEY, parquet_bytes

    t = table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
    t = t.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()})
    return parquet_bytes(t)
