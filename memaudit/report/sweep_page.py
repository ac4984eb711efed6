"""The pages of a sweep: its figures (recovery.png, entropy.png, verdicts.png) and index.html, a
self-contained page that embeds them beside the per-point table and the settings. The
calibration's index.html (memaudit.experiments.calibration) is built with the same pieces.

Figures go through the kit's figure_png (memaudit.report.html) at SWEEP_DPI / SWEEP_PAD_INCHES
and use its one verdict palette, VERDICT_COLORS.
"""
from __future__ import annotations

import json

import numpy as np

from .. import __version__
from .html import VERDICT_COLORS, esc, figure_png

SWEEP_DPI = 110
SWEEP_PAD_INCHES = 0.1


def sweep_png(fig) -> bytes:
    """PNG bytes of a pyplot figure at the sweep pages' resolution and padding; closes the figure."""
    import matplotlib.pyplot as plt

    data = figure_png(fig, dpi=SWEEP_DPI, pad_inches=SWEEP_PAD_INCHES)
    plt.close(fig)
    return data


def sweep_figures(table, title: str = "") -> dict[str, bytes]:
    """recovery.png (train/test recovery vs n_train per t0), entropy.png (scan statistics vs
    n_train), verdicts.png (scan verdict beside the recovery ground truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    t0s = sorted(table["t0"].unique())
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, t0 in enumerate(t0s):
        color = cmap(i / max(1, len(t0s) - 1) * 0.9)
        for split, style in (("train", "-"), ("test", "--")):
            d = table[(table["t0"] == t0) & (table["split"] == split)].sort_values("n_train")
            if d.empty:
                continue
            err = np.vstack([d["recovery_rate"] - d["recovery_rate_lo"], d["recovery_rate_hi"] - d["recovery_rate"]])
            ax.errorbar(d["n_train"], d["recovery_rate"], yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o" + style,
                        color=color, capsize=2, label=f"{split} t0={t0:g}")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training-set size n_train (sequences)")
    ax.set_ylabel("recovery rate (corrupted tokens restored)")
    ax.set_title(f"Token recovery: train (solid) vs held-out (dashed) {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    figures["recovery.png"] = sweep_png(fig)

    pts = table.drop_duplicates("n_train").sort_values("n_train")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    err = np.vstack([pts["scan_mean_entropy"] - pts["scan_mean_entropy_lo"],
                     pts["scan_mean_entropy_hi"] - pts["scan_mean_entropy"]])
    a1.errorbar(pts["n_train"], pts["scan_mean_entropy"], yerr=np.clip(err, 0, None), fmt="o-", capsize=3)
    a1.set_xscale("log")
    a1.set_xlabel("n_train")
    a1.set_ylabel("mean conditional entropy on samples (nats)")
    t_eval = float(pts["scan_t_eval"].iloc[0]) if "scan_t_eval" in pts and len(pts) else float("nan")
    a1.set_title(f"Scan: mean entropy at t_eval={t_eval:g} {title}")
    a1.grid(alpha=0.3)
    for col, label in (("scan_low_entropy_fraction", "tokens with H < τ"),
                       ("scan_near_zero_sample_fraction", "samples with mean H < τ"),
                       ("scan_duplicate_rate", "duplicate samples"),
                       ("scan_train_copy_rate", "samples = training sequence"),
                       ("scan_fixed_point_fraction", "greedy fixed points"),
                       ("scan_mean_fixed_point_distance", "tokens the greedy dynamics changes")):
        if col not in pts:
            continue
        a2.plot(pts["n_train"], pts[col], "o-", label=label)
    a2.set_xscale("log")
    a2.set_ylim(-0.03, 1.03)
    a2.set_xlabel("n_train")
    a2.set_ylabel("fraction")
    a2.set_title("Scan: low-entropy fraction and supporting signals")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7)
    figures["entropy.png"] = sweep_png(fig)

    fig, ax = plt.subplots(figsize=(8, 2.6))
    for row, (col, reason_col, label) in enumerate((("recovery_verdict", "recovery_reason", "recovery (ground truth)"),
                                                    ("scan_verdict", "scan_reason", "scan (data-free)"))):
        for _, p in pts.iterrows():
            ax.scatter(p["n_train"], row, s=160, color=VERDICT_COLORS.get(p[col], "k"), edgecolor="k", zorder=3)
            ax.annotate(str(p[reason_col]), (p["n_train"], row), textcoords="offset points", xytext=(0, 10),
                        ha="center", fontsize=6)
    ax.set_yticks([0, 1], ["recovery (ground truth)", "scan (data-free)"])
    ax.set_ylim(-0.6, 1.7)
    ax.set_xscale("log")
    ax.set_xlabel("n_train")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, markeredgecolor="k", label=v)
               for v, c in VERDICT_COLORS.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(f"Verdicts {title}")
    ax.grid(alpha=0.3, axis="x")
    figures["verdicts.png"] = sweep_png(fig)
    return figures


def points_frame(table, primary_t0: float):
    """One row per point (the per-point columns of the tidy table, recovery at the t0 nearest
    primary_t0)."""
    import pandas as pd

    rows = []
    for (data, preset, n), d in table.groupby(["data", "preset", "n_train"], sort=True):
        first = d.iloc[0]
        at = d[np.isclose(d["t0"], d["t0"].iloc[(d["t0"] - primary_t0).abs().argmin()])]
        tr = at[at["split"] == "train"]["recovery_rate"]
        te = at[at["split"] == "test"]["recovery_rate"]
        rows.append({"data": data, "preset": preset, "n_train": n, "steps": first["steps"],
                     "final_loss": first["final_loss"], "t0": float(at["t0"].iloc[0]),
                     "train_recovery": float(tr.iloc[0]) if len(tr) else np.nan,
                     "test_recovery": float(te.iloc[0]) if len(te) else np.nan,
                     "recovery_verdict": first["recovery_verdict"], "recovery_reason": first["recovery_reason"],
                     "scan_verdict": first["scan_verdict"], "scan_reason": first["scan_reason"],
                     "mean_entropy": first["scan_mean_entropy"], "entropy_ratio": first["scan_entropy_ratio"],
                     "near_zero_samples": first["scan_near_zero_sample_fraction"],
                     "duplicates": first["scan_duplicate_rate"], "fixed_points": first["scan_fixed_point_fraction"],
                     "train_copies": first["scan_train_copy_rate"]})
    return pd.DataFrame(rows)


def index_html(title: str, figures: dict[str, bytes], table, settings: dict | None = None,
               extra_html: str = "", *, primary_t0: float) -> str:
    """A self-contained page: the figures base64-embedded, the per-point table, the settings."""
    import base64

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%;display:block;margin:1em 0}pre{background:#f6f6f6;padding:1em;font-size:11px}"
             "</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for name, png in figures.items():
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h2>{esc(name)}</h2><img alt='{esc(name)}' src='data:image/png;base64,{b64}'>")
    if table is not None and len(table):
        parts.append("<h2>Points</h2>")
        frame = points_frame(table, primary_t0)
        parts.append(frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    parts.append(extra_html)
    if settings:
        parts.append("<h2>Settings</h2><pre>" + esc(json.dumps(settings, indent=2, sort_keys=True, default=str))
                     + "</pre>")
    parts.append(f"<p><small>memaudit {__version__}</small></p></body></html>")
    return "\n".join(parts)
