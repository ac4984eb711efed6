"""Calibration of the scan's decision rule on reference models of known regime: the plan, the
calibration table, the outputs and the run. The fitting itself is memaudit.verdict.fit.

    memaudit calibrate --out DIR [--device cuda --workers 16 --deadline 450]   (trains, ~minutes on a GPU)
    memaudit calibrate --from-table memaudit/calibration/calibration_table.parquet --out memaudit/calibration/

1. Sweeps (memaudit.experiments) over the PLAN: ≥ 2 data sources (the synthetic Markov language and
   real text: the standard library's docstrings) × ≥ 2 presets (nano, micro), each over
   training-set sizes from a few sequences to far past the model's capacity.
2. Ground truth per point = the token-recovery verdict (memaudit.verdict.recovery) as a label
   (memaudit.verdict.labels.ground_truth): memorizing, generalizing, "undertrained" (recovery
   below the floor in both splits) or "transition" (any other inconclusive recovery result, and
   partial memorization: a memorizing verdict whose training recovery falls below FULL_RECALL at
   some t0). The scan statistics of the same checkpoint are kept per sample, at every candidate
   t_eval, in the calibration table (one row per point; `table_rows`).
3. The rule (memaudit.verdict.scan's structure and decision order) is derived from the table
   alone, deterministically (memaudit.verdict.fit.derive_rule: thresholds by coordinate-wise
   search with the largest margins, the smallest best t_eval, min_samples from the sample-count
   curve), and checked by leaving one sweep out.
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

from .. import __version__
from ..verdict import LABELS, VERDICTS, ground_truth
from ..verdict.fit import CalibrationError, derive_rule, leave_one_sweep_out
from .points import load_points, point_finished, prepare_corpus
from .pool import SweepView, run_jobs
from .settings import PRIMARY_T0, SweepSettings
from .sweep import write_outputs
from .tables import build_table, point_record, table_bytes

# --------------------------------------------------------------------------------------- the plan
# Real text: the stdlib docstrings (≈1.7 MB): the largest built-in text, the only one big enough for
# a generalizing point. "max" = the whole training pool of the corpus.
SYNTHETIC_SIZES = (8, 32, 128, 512, 2048, 8192, 32768, 131072)
TEXT_SIZES = (8, 32, 128, 512, 2048, "max")
DEFAULT_SOURCES = ("synthetic", "stdlib")
DEFAULT_PRESETS = ("nano", "micro")
DEFAULT_STEPS_CAP = {"synthetic": 6000, "text": 10000}
T_EVAL_CANDIDATES = (1e-5, 0.01, 0.05, 0.1, 0.25)


# ------------------------------------------------------------------------------- the calibration table


def table_rows(points: dict[int, dict], data: str, preset: str) -> list[dict]:
    """The calibration-table rows of a sweep's points (the per-sample arrays in the layout of
    memaudit.experiments.tables.point_record, which memaudit.stats.record_statistics reads)."""
    rows = []
    for n, p in sorted(points.items()):
        rec = point_record(p)
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
               "basin_agreement": (None if rec["basin_agreement"] is None
                                   else [float(v) for v in rec["basin_agreement"]]),
               "near_copies_earlier": (None if rec["near_copies_earlier"] is None
                                       else [int(v) for v in rec["near_copies_earlier"]]),
               "near_copy_fraction": rec["near_copy_fraction"],
               "sample_tokens": (None if rec["sample_tokens"] is None
                                 else [[int(v) for v in row] for row in rec["sample_tokens"]]),
               "layout": rec["layout"],
               "n_parameters": rec["n_parameters"],
               "raw_scan_verdict": (p.get("scan_raw") or {}).get("verdict"),
               "raw_scan_mean_entropy": (p.get("scan_raw") or {}).get("mean_entropy")}
        # no wall-clock columns: the table is the same for the same points on any machine or
        # cluster (a point's timings stay in its point.json)
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
    """Parquet bytes of the calibration table (`path` is unused: the caller writes the bytes)."""
    import pyarrow as pa

    return table_bytes(pa.Table.from_pylist(rows), metadata)


def read_table(path: str | Path) -> tuple[list[dict], dict]:
    import pyarrow.parquet as pq

    from ..report import METADATA_KEY

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


# ------------------------------------------------------------------------------------- outputs
def confusion_markdown(conf: dict) -> str:
    lines = ["| recovery ground truth \\ scan verdict | " + " | ".join(VERDICTS) + " |",
             "|---|" + "---|" * len(VERDICTS)]
    for label in LABELS:
        if label in conf and sum(conf[label].values()):
            lines.append(f"| {label} | " + " | ".join(str(conf[label][v]) for v in VERDICTS) + " |")
    return "\n".join(lines)


def _evidence_rows(rule: dict) -> list[str]:
    """The v2 rule's stored-set evidence and domain, as rows of the rule table."""
    ev, dom = rule.get("evidence"), rule.get("domain") or {}
    if not ev:
        return []
    near = (f" or ≥ {ev['min_near_pairs']:g} pairs differing in at most {ev['near_copy_fraction']:.0%} of their "
            "tokens (near copies)") if "min_near_pairs" in ev else ""
    rows = [f"| stored-set evidence (set by principle, not fitted) | low entropy is memorizing only with ≥ "
            f"{ev['min_colliding_pairs']:g} identical sample pairs{near} (repeated_samples) or a share of samples returning "
            f"whole after re-noising at t = {ev['basin_t']:g} whose CI lower bound is > {ev['basin_return_min']:g} "
            "(attractor_samples); otherwise inconclusive (low_entropy_language). Generalizing also needs no "
            f"repeats and a whole-return CI upper bound ≤ {ev['basin_return_max']:g} |"]
    if "position_information_max" in ev:
        clear = (f" With ≥ {ev['position_clear_min_samples']:g} samples and the position test's p > "
                 f"{ev['position_information_p_settle']:g} (layout not aligned), samples beyond the fixed-point "
                 "bound are not unstable_samples.") if "position_clear_min_samples" in ev else ""
        rows.append(f"| position-locked samples (set by principle, not fitted) | a token carrying > "
                    f"{ev['position_information_max']:g} nats about its position (shift-permutation p ≤ "
                    f"{ev['position_information_p_max']:g}): finite entropy → inconclusive (position_locked_samples) "
                    "unless the layout is aligned; low entropy and a stream layout → memorizing. A generalizing "
                    f"verdict with p ≤ {ev['position_information_p_settle']:g} is not settled (the adaptive scan "
                    f"draws more samples).{clear} |")
    ranges = ", ".join(f"{k} {lo:,}–{hi:,}" for k, v in dom.items() if k in ("vocab_size", "seq_len", "n_parameters")
                       for lo, hi in [v])
    if ranges:
        rows.append(f"| domain (calibration + validation points: {dom.get('points', {})}) | {ranges}; mean entropy "
                    f"{dom['mean_entropy'][0]:g}–{dom['mean_entropy'][1]:g} nats |")
    return rows


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
             *_evidence_rows(rule),
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

    from ..report.html import VERDICT_COLORS
    from ..report.sweep_page import sweep_png

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
    return {"calibration.png": sweep_png(fig)}


def per_sweep_figures(recovery_table) -> dict[str, bytes]:
    """Each sweep's figures (memaudit.report.sweep_page.sweep_figures), named 'data·preset: file'."""
    from ..report.sweep_page import sweep_figures

    shown = {}
    for (data, preset), part in recovery_table.groupby(["data", "preset"], sort=True):
        for name, png in sweep_figures(part, title=f"{data} · {preset}").items():
            shown[f"{data}·{preset}: {name}"] = png
    return shown


def regenerate(table_path: str | Path, out: str | Path, command: str | None = None, log=None) -> dict:
    """Derive rule.json + calibration.json (+ index.html, figures) from a calibration table."""
    from ..report import json_bytes, write_files

    log = log or (lambda msg: None)
    rows, meta = read_table(table_path)
    raw = Path(table_path).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    command = command or " ".join(shlex.quote(a) for a in ["memaudit", *sys.argv[1:]])
    source = (f"{command} (table {Path(table_path).name} sha256 {sha[:16]}; table produced by: "
              f"{meta.get('command', 'unknown')})")
    # The validation table checked in beside the calibration table (memaudit validate) widens the
    # domain the rule records; it is never fitted on.
    validation_path = Path(table_path).with_name("validation") / "validation_table.parquet"
    validation_rows = read_table(validation_path)[0] if validation_path.is_file() else []
    try:
        rule, report = derive_rule(rows, source=source, log=log, validation_rows=validation_rows)
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

        from ..report.sweep_page import index_html

        recovery_table = pd.read_parquet(recovery_path)
        figures = calibration_figures(rows, report, rule, recovery_table)
        files.update(figures)
        shown = {**figures, **per_sweep_figures(recovery_table)}
        extra = ("<h2>Confusion (recovery ground truth × scan verdict)</h2><pre>"
                 + confusion_markdown(report["confusion"]) + "</pre><h2>Rule</h2><pre>"
                 + json.dumps(rule, indent=2) + "</pre>")
        files["index.html"] = index_html("memaudit calibration", shown, recovery_table, None, extra,
                                         primary_t0=PRIMARY_T0).encode()
    return {"files": write_files(out, files), "rule": rule, "report": report}


def _write_without_rule(rows, table_path, out, message: str) -> None:
    from ..report import json_bytes, write_files
    from ..report.html import esc

    recovery_path = Path(table_path).with_name("recovery_table.parquet")
    points = [{k: r.get(k) for k in ("data", "preset", "n_train", "steps", "truncated", "label", "recovery_reason")}
              for r in rows]
    files = {"calibration.json": json_bytes({"error": message, "points": points, "memaudit_version": __version__})}
    if recovery_path.exists():
        import pandas as pd

        from ..report.sweep_page import index_html

        recovery_table = pd.read_parquet(recovery_path)
        shown = per_sweep_figures(recovery_table)
        files["index.html"] = index_html("memaudit calibration (no rule)", shown, recovery_table, None,
                                         f"<p><b>No rule:</b> {esc(message)}</p>", primary_t0=PRIMARY_T0).encode()
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
        from ..data import load_corpus

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
                    log=None, backend=None) -> dict:
    """Run the sweeps of the plan (all points in one pool, or as tasks of `backend`: Ray), then
    derive and write the rule."""
    import pandas as pd

    from ..report import write_files

    log = log or (lambda msg: None)
    started = time.perf_counter()
    work = Path(work)
    sweeps = plan.sweeps()
    jobs, reused = [], []
    for s in sweeps:
        s.validate()
        prepare_corpus(s)
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
        failed, skipped = run_jobs(jobs, workers, view, started, deadline_s, backend=backend)
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
