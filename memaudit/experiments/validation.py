"""Out-of-sample validation of the scan's decision rule: models the rule was never fitted on.

    memaudit validate SWEEP_DIR … --out memaudit/calibration/validation     (re-scans checkpoints)
    memaudit validate --from-table memaudit/calibration/validation/validation_table.parquet --out DIR

1. The points are finished `memaudit sweep` directories (docs/validation-runs-2026-12-01/run*.sh
   trains them): every point keeps its token-recovery result (the ground truth, labelled as in
   calibration, memaudit.verdict.labels) and its checkpoint.
2. Each checkpoint is scanned again with today's scan (same samples, seed and evaluation times as
   the sweep's own scan, plus every statistic added since, e.g. the basin test), so the table holds
   the per-sample values of the current scan; a rescan is cached beside the point
   (validation-scan.json) and redone only when the scan's settings or memaudit's version change.
3. The validation table has the calibration table's layout (one row per point, per-sample arrays,
   memaudit.stats.record_statistics reads it) plus the sweep's name, so `--from-table` re-judges it
   under any rule without a model: CI never retrains.
4. Outputs (one file set): validation_table.parquet, validation.json (decisions, both confusion
   tables, the domain the points span) and validation.md.

Wrong definite verdicts are counted twice: by the calibration's convention (any definite verdict on
a transition or undertrained point is wrong) and by the release gate's (a model that recovery
calls memorizing — partially or fully — called generalizing, or a generalizing one called
memorizing).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..verdict import LABELS, VERDICTS
from .calibration import confusion_markdown, read_table, table_rows, write_table
from .points import scan_record
from .settings import settings_key


class ValidationError(UsageError):
    """Bad validation input: no sweep directory, no finished point, an unreadable table (exit 2)."""


RESCAN_FILE = "validation-scan.json"


# ------------------------------------------------------------------------------------ the points
def sweep_points(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """(point directory, point.json document) of every evaluated point of a sweep with a checkpoint."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "points").is_dir():
        raise ValidationError(f"{sweep_dir}: not a sweep directory (no points/)")
    found = []
    for pdir in sorted((sweep_dir / "points").iterdir()):
        doc_file, ckpt = pdir / "point.json", pdir / "checkpoint" / "config.json"
        if not (doc_file.is_file() and ckpt.is_file()):
            continue
        try:
            doc = json.loads(doc_file.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("training", {}).get("steps_done") != json.loads(ckpt.read_text())["training"].get("steps_done"):
            continue                                  # trained further since it was evaluated
        found.append((pdir, doc))
    return found


def rescan_settings(point: dict):
    """The ScanSettings of today's scan at the sweep scan's own samples, seed and times."""
    from ..probe import ScanSettings

    scan = point["scan"]
    t_values = [float(t) for t in scan["t_values"]]
    return ScanSettings(samples=len(point["samples"]["duplicate_of"]), steps=int(scan["steps"]),
                        seed=int(scan.get("seed", 0)), t_eval=t_values[0], t_profile=tuple(t_values[1:]),
                        bootstrap_resamples=scan.get("bootstrap_resamples"), adaptive=False)


def rescan_point(pdir: Path, point: dict, device: str = "cpu", log=None) -> dict:
    """The point document with its scan and per-sample arrays from today's scan of its checkpoint
    (recovery, training and corpus as the sweep recorded them). Cached in pdir/validation-scan.json."""
    from ..probe import scan

    settings = rescan_settings(point)
    key = settings_key({"settings": settings.to_dict(), "memaudit": __version__, "point": point.get("train_key")})
    cache = pdir / RESCAN_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return {**point, **cached["point"]}
    except (OSError, ValueError, KeyError):
        pass
    if log:
        log(f"scanning {pdir}")
    sc = scan(pdir / "checkpoint", settings=settings, device=device, show_progress=False)
    old = point["samples"]
    same = [int(v) for v in sc.duplicate_of] == [int(v) for v in old["duplicate_of"]] and all(
        math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-5)
        for a, b in zip(sc.sample_mean_entropy.tolist(), old["mean_entropy"][0]))
    # training copies were counted on the sweep's samples; the same sampler and seed draw the same
    # samples (checked: samples_match_sweep)
    update = scan_record(sc, old.get("is_train_copy"))
    update.update({
        "samples_match_sweep": bool(same),
        "n_parameters": sc.model.get("n_parameters"),
        "seq_len": int(sc.tokens.shape[1]),
    })
    cache.write_text(json.dumps({"key": key, "point": update}, sort_keys=True))
    return {**point, **update}


def build_rows(sweep_dirs, device: str = "cpu", log=None) -> list[dict]:
    """Validation-table rows of every point of the sweeps (re-scanned), in sweep order."""
    rows = []
    for sweep_dir in sweep_dirs:
        points = sweep_points(Path(sweep_dir))
        if not points:
            raise ValidationError(f"{sweep_dir}: no evaluated point with a checkpoint")
        by_n = {}
        for pdir, doc in points:
            by_n[int(doc["n_train"])] = rescan_point(pdir, doc, device=device, log=log)
        first = next(iter(by_n.values()))
        data, preset = first["settings"]["data"], first["settings"]["preset"]
        for row in table_rows(by_n, data, preset):
            row["sweep"] = Path(sweep_dir).name
            row["samples_match_sweep"] = bool(by_n[row["n_train"]].get("samples_match_sweep", True))
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------- the judgement
def gate_wrong(label: str, recovery_verdict: str, verdict: str) -> bool:
    """A wrong verdict in the release gate's sense: recovery says the model memorizes (fully or
    partly) and the scan says generalizing, or recovery says generalizing and the scan memorizing."""
    if verdict == "generalizing":
        return recovery_verdict == "memorizing" or label == "memorizing"
    if verdict == "memorizing":
        return label == "generalizing"
    return False


def replay_adaptive(row: dict, rule) -> tuple:
    """The full-sample decision on a stored point (per-sample values in a calibration or
    validation table, in the order they were drawn) and the adaptive scan's, replayed over its
    looks (memaudit.verdict.sequential). → (full Decision, adaptive Decision, samples used)."""
    from ..stats import record_statistics
    from ..verdict import Evidence, sequential

    def decide_at(k, confidence):
        stats = record_statistics(row, rule.t_eval, rule.tau, rule.bootstrap_resamples,
                                  rule.confidence if confidence is None else confidence, k=k)
        return rule.decide(Evidence.from_stats(stats, steps=row.get("scan_steps"),
                                               n_parameters=row.get("n_parameters")))

    n = len(row["duplicate_of"])
    adaptive, used = sequential.replay(sequential.looks(rule.min_samples, n), decide_at)
    return decide_at(n, None), adaptive, used


def judge(rows: list[dict], rule=None) -> dict:
    """Decisions of `rule` (default: the scan's default rule) on every row, both confusion tables,
    the counts and the domain the rows span."""
    from ..stats import record_statistics
    from ..verdict import Evidence, load_rule

    rule = load_rule(rule)
    decisions = []
    conf = {label: {v: 0 for v in VERDICTS} for label in LABELS}
    for r in rows:
        stats = record_statistics(r, rule.t_eval, rule.tau, rule.bootstrap_resamples, rule.confidence)
        if stats is None:
            verdict, reason, explanation = "inconclusive", "rule_mismatch", "t_eval not measured"
            stats = {}
        else:
            d = rule.decide(Evidence.from_stats(stats, steps=r.get("scan_steps"), n_parameters=r.get("n_parameters")))
            verdict, reason, explanation = d.verdict, d.reason, d.explanation
        conf[r["label"]][verdict] += 1
        decisions.append({
            "sweep": r.get("sweep"), "data": r["data"], "preset": r["preset"], "n_train": r["n_train"],
            "steps": r["steps"], "vocab_size": r["vocab_size"], "seq_len": r["seq_len"],
            "n_parameters": r.get("n_parameters"), "label": r["label"], "recovery_verdict": r["recovery_verdict"],
            "recovery_reason": r["recovery_reason"],
            "train_recovery": r.get("train_recovery@0.25"), "test_recovery": r.get("test_recovery@0.25"),
            "train_copy_rate": r.get("train_copy_rate"),
            "verdict": verdict, "reason": reason, "explanation": explanation,
            "mean_entropy": stats.get("mean_entropy"), "mean_entropy_ci": stats.get("mean_entropy_ci"),
            "entropy_ratio": stats.get("entropy_ratio"), "duplicate_rate": stats.get("duplicate_rate"),
            "colliding_pairs": stats.get("colliding_pairs"), "near_pairs": stats.get("near_pairs"),
            "distinct_sequences_ci": stats.get("distinct_sequences_ci"),
            "basin_return_rate": stats.get("basin_return_rate"),
            "basin_return_rate_ci": stats.get("basin_return_rate_ci"),
            "mean_fixed_point_distance": stats.get("mean_fixed_point_distance"),
            "position_information": stats.get("position_information"),
            "wrong_calibration_convention": verdict != "inconclusive" and verdict != r["label"],
            "wrong_gate": gate_wrong(r["label"], r["recovery_verdict"], verdict),
        })
    clear = [d for d in decisions if d["label"] in ("memorizing", "generalizing")]
    return {
        "rule": rule.describe(),
        "decisions": decisions,
        "confusion": conf,
        "points": len(decisions),
        "languages": sorted({d["data"] for d in decisions}),
        "clear_points": len(clear),
        "clear_decided": sum(1 for d in clear if d["verdict"] == d["label"]),
        "wrong_gate": sum(d["wrong_gate"] for d in decisions),
        "wrong_calibration_convention": sum(d["wrong_calibration_convention"] for d in decisions),
        "domain": span(rows),
    }


def span(rows: list[dict]) -> dict:
    """[min, max] of vocabulary, sequence length and parameter count over the rows."""
    out = {}
    for axis in ("vocab_size", "seq_len", "n_parameters"):
        values = [int(r[axis]) for r in rows if r.get(axis) is not None]
        if values:
            out[axis] = [min(values), max(values)]
    return out


def _pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


def _num(x, pattern="{:.3f}") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else pattern.format(x)


def report_markdown(result: dict, command: str, table_sha: str) -> str:
    """validation.md: the per-point table, both counts and the confusion table."""
    rule = result["rule"]
    lines = [
        "# Out-of-sample validation of the scan rule",
        "",
        f"Rule **{rule['name']} v{rule['version']}** ({rule['status']}, sha256 {rule['sha256'][:16]}), "
        f"t_eval = {rule['t_eval']:g}, τ = {rule['tau']:g} nats. No threshold was fitted on these models "
        "(docs/calibration.md says which points had been looked at when each evidence bound was set).",
        f"Regenerate: `{command}` (validation table sha256 {table_sha[:16]}; the table was built by "
        f"`memaudit validate` from the sweeps {', '.join(result.get('table_built_from') or ['(unknown)'])}, "
        "trained and re-scanned by the scripts in docs/validation-runs-2026-12-01/).",
        "",
        f"- points: {result['points']} over {len(result['languages'])} languages ({', '.join(result['languages'])})",
        f"- wrong definite verdicts, release-gate sense (a memorizer — fully or partly, by recovery — called "
        f"generalizing, or a generalizer called memorizing): **{result['wrong_gate']}**",
        f"- definite verdicts on points whose label differs (calibration convention: transition and undertrained "
        f"points should be inconclusive): {result['wrong_calibration_convention']}",
        f"- clear points (memorizing or generalizing by recovery) decided: {result['clear_decided']} of "
        f"{result['clear_points']}",
        "- domain spanned: " + ", ".join(f"{k} {lo:,}–{hi:,}" for k, (lo, hi) in result["domain"].items()),
        "",
        "## Confusion table (recovery ground truth × scan verdict)",
        "",
        confusion_markdown(result["confusion"]),
        "",
        "## Points",
        "",
        "| sweep | n_train | steps | V | L | recovery train / test @0.25 | label | scan verdict (reason) | "
        "mean H (nats) | H / ln V | identical pairs | near pairs (≤ 25 % differ) | return whole @t=0.5 | "
        "fixed-point distance | position information (nats) |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in result["decisions"]:
        mark = " **✗**" if d["wrong_gate"] else ""
        lines.append(
            f"| {d['sweep'] or d['data'] + '-' + d['preset']} | {d['n_train']:,} | {d['steps']} | {d['vocab_size']:,} | "
            f"{d['seq_len']} | {_num(d['train_recovery'], '{:.2f}')} / {_num(d['test_recovery'], '{:.2f}')} | "
            f"{d['label']} | {d['verdict']} ({d['reason']}){mark} | {_num(d['mean_entropy'])} | "
            f"{_pct(d['entropy_ratio'])} | {d['colliding_pairs']} | {_num(d['near_pairs'], '{:d}')} | "
            f"{_pct(d['basin_return_rate'])} | "
            f"{_num(d['mean_fixed_point_distance'])} | {_num(d['position_information'])} |")
    lines += ["", "Entropies in nats. Ground truth: `memaudit recover` (256 training + 256 held-out examples per "
              "point); labels as in calibration (memaudit.verdict.labels).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the run
def run_validation(out: Path, sweep_dirs=(), from_table: Path | None = None, rule=None, device: str = "cpu",
                   command: str = "", log=None) -> dict:
    """Build (or read) the validation table, judge it, write the file set. → the judgement.
    command: how the run was invoked (validation.md); the table records only the sweeps it came
    from, so the same sweeps give the same table bytes wherever it is written."""
    from ..io import json_text, write_file_set

    if from_table is not None:
        try:
            rows, meta = read_table(from_table)
        except Exception as e:  # noqa: BLE001 - CalibrationError and pyarrow's own
            raise ValidationError(str(e)) from None
    else:
        if not sweep_dirs:
            raise ValidationError("give sweep directories or --from-table")
        rows = build_rows(sweep_dirs, device=device, log=log)
        meta = {"memaudit_version": __version__, "kind": "validation",
                "sweeps": [Path(d).name for d in sweep_dirs]}
    table = write_table(rows, None, meta)
    sha = hashlib.sha256(table).hexdigest()
    result = judge(rows, rule)
    result["command"] = command
    result["table_built_from"] = meta.get("sweeps")
    result["table_sha256"] = sha
    result["memaudit_version"] = __version__
    result["units"] = "nats"
    out = Path(out)
    write_file_set({out / "validation_table.parquet": table,
                    out / "validation.json": json_text(result).encode(),
                    out / "validation.md": report_markdown(result, command, sha).encode()})
    return result
