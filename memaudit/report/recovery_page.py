"""report.html of `memaudit recover`: recovery per split and t0 with CIs, the train − test gap,
examples of recovered and failed tokens, provenance."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from .ci import checkpoint_name, fmt_ci
from .html import (REPORT_NAME, VERDICT_COLORS, esc, flatten, html_page, img, loading_notes, local_decoder,
                   new_figure, table, token_pieces, visible, write_html)

def _num(x, pattern="{:.3g}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return pattern.format(x)


def recovery_figure(summaries: list[dict]):
    """(a) recovery rate against t0 per split, with CIs; (b) final-state entropy of recovered and
    failed tokens against t0."""
    fig = new_figure(9.6, 3.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = {"train": "#b42318", "test": "#1570ef"}
    for split in sorted({s["split"] for s in summaries}, key=lambda x: (x != "train", x)):
        rows = sorted((s for s in summaries if s["split"] == split), key=lambda s: s["t0"])
        t = np.array([s["t0"] for s in rows], dtype=float)
        y = np.array([np.nan if s.get("recovery_rate") is None else s["recovery_rate"] for s in rows], dtype=float)
        ci = np.array([[np.nan if v is None else v for v in (s.get("recovery_rate_ci") or [None, None])]
                       for s in rows], dtype=float)
        err = np.abs(np.vstack([y - ci[:, 0], ci[:, 1] - y]))
        c = colors.get(split, "#475467")
        ax1.errorbar(t, y, yerr=np.nan_to_num(err), marker="o", color=c, capsize=3, label=split)
        for cat, ls in (("recovered", "-"), ("failed", "--")):
            h = np.array([np.nan if s.get(f"entropy_{cat}") is None else s[f"entropy_{cat}"] for s in rows], dtype=float)
            ax2.plot(t, h, marker="o", ls=ls, color=c, label=f"{split}, {cat} tokens")
    ax1.set_xlabel("corruption level t0 (≈ share of tokens redrawn)")
    ax1.set_ylabel("recovery rate of corrupted tokens")
    ax1.set_ylim(-0.03, 1.03)
    ax1.legend(frameon=False, fontsize=8)
    ax2.set_xlabel("corruption level t0")
    ax2.set_ylabel("final-state entropy (nats)")
    ax2.ticklabel_format(axis="y", useOffset=False)
    ax2.set_ylim(bottom=0)
    ax2.legend(frameon=False, fontsize=7)
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def _recovery_rows_html(row, decode) -> str:
    x0 = [int(i) for i in row["original_ids"]]
    xt = [int(i) for i in row["corrupted_ids"]]
    xf = [int(i) for i in row["restored_ids"]]
    shown = {}
    for name, ids in (("original", x0), ("corrupted", xt), ("restored", xf)):
        pieces = token_pieces(decode, ids) if decode is not None else None
        shown[name] = [(visible(p) or "∅") for p in pieces] if pieces is not None else [str(i) for i in ids]
    lines = []
    for name, ids in (("original", x0), ("corrupted", xt), ("restored", xf)):
        spans = []
        for k, tid in enumerate(ids):
            corrupted, correct = xt[k] != x0[k], xf[k] == x0[k]
            if name == "corrupted":
                cls = "cor" if corrupted else ""
            elif name == "restored":
                cls = ("rec" if correct else "fail") if corrupted else ("" if correct else "unst")
            else:
                cls = ""
            kind = "" if decode is not None else " id"
            spans.append(f"<span class=\"tok{kind} {cls}\" title=\"position {k}, token id {tid}\">"
                         f"{esc(shown[name][k])}</span>")
        lines.append(f"<div class=\"meta\">{name}</div><div class=\"toks\">{''.join(spans)}</div>")
    meta = (f"{row['split']} example #{int(row['example_id'])} · t0 = {float(row['t0']):g} · "
            f"{int(row['n_recovered'])}/{int(row['n_corrupted'])} corrupted tokens recovered · "
            f"{int(row['n_unstable'])} untouched tokens broken")
    return f"<div class=\"sample\"><div class=\"meta\"><b>{esc(meta)}</b></div>{''.join(lines)}</div>"


def recovery_html(summary: dict, frame, decode=None, examples_per_split: int = 3) -> str:
    """The report page of `memaudit recover` from its summary document and recovery.parquet."""
    verdict = str(summary.get("verdict", "inconclusive"))
    color = VERDICT_COLORS.get(verdict, VERDICT_COLORS["inconclusive"])
    ckpt = checkpoint_name(summary)
    parts = [f"<h1>memaudit recovery report</h1><p class=\"sub\">{esc(ckpt)}</p>",
             f"<div class=\"verdict\" id=\"verdict\" style=\"background:{color}\">"
             f"<span class=\"label\">{esc(verdict)}</span><span class=\"gate\">ground truth with data · reason: "
             f"{esc(summary.get('reason', ''))}</span><p>{esc(summary.get('explanation', ''))}</p></div>",
             loading_notes((summary.get("provenance") or {}).get("model") or summary.get("model") or {})]
    summaries = summary.get("summaries") or []
    if summaries:
        parts.append("<h2>Token recovery</h2>")
        parts.append(img(recovery_figure(summaries), "token recovery by corruption level",
                         "Left: share of corrupted tokens restored exactly, training vs held-out examples (error "
                         "bars: confidence intervals). Right: conditional entropy of the final state at recovered "
                         "and failed tokens."))
    gaps = summary.get("gaps") or []
    if gaps:
        parts.append(table([(_num(g["t0"], "{:g}"), _num(g.get("train")), _num(g.get("test")), _num(g.get("gap"), "{:+.3f}"),
                             fmt_ci(g.get("gap_ci"), "{:.3g}", missing="—")) for g in gaps],
                           ["t0", "train recovery", "test recovery", "train − test", "gap CI"], num_cols=(0, 1, 2, 3)))
    if summaries:
        rows = [(s["split"], _num(s["t0"], "{:g}"), str(s.get("n", "")), _num(s.get("mean_corrupted_fraction")),
                 _num(s.get("recovery_rate")), fmt_ci(s.get("recovery_rate_ci"), "{:.3g}", missing="—"),
                 _num(s.get("unstable_rate")),
                 _num(s.get("exact_match")), _num(s.get("entropy_recovered")), _num(s.get("entropy_failed")))
                for s in summaries]
        parts.append("<h2>Per split and corruption level</h2>")
        parts.append(table(rows, ["split", "t0", "examples", "corrupted share", "recovery", "recovery CI",
                                  "unstable rate", "exact match", "H recovered (nats)", "H failed (nats)"],
                           num_cols=range(1, 10)))
    patterns = summary.get("patterns") or []
    if patterns:
        parts.append("<h2>Conditioning patterns (beside the verdict)</h2>")
        parts.append("<div class=\"note\">Exact completion of the regenerated positions from noise at t = 1, the "
                     "kept positions clamped. The verdict above comes from uniform corruption only.</div>")
        parts.append(table([(p["pattern"], p["split"], str(p["n"]), _num(p.get("regenerated_tokens"), "{:.1f}"),
                             _num(p.get("exact_completion")), fmt_ci(p.get("exact_completion_ci"), "{:.3g}", missing="—"),
                             _num(p.get("token_accuracy"))) for p in patterns],
                           ["pattern", "split", "examples", "regenerated tokens", "exact completion", "CI",
                            "token accuracy"], num_cols=(2, 3, 4, 6)))
        parts.append(table([(g["pattern"], _num(g.get("train")), _num(g.get("test")), _num(g.get("gap"), "{:+.3f}"),
                             fmt_ci(g.get("gap_ci"), "{:.3g}", missing="—")) for g in summary.get("pattern_gaps") or []],
                           ["pattern", "train", "test", "train − test", "gap CI"], num_cols=(1, 2, 3)))
    if frame is not None and len(frame):
        t_values = sorted(set(frame["t0"].tolist()))
        t_mid = t_values[len(t_values) // 2]
        if decode is None:
            decode = local_decoder(summary)
        parts.append(f"<h2>Examples at t0 = {t_mid:g}</h2>")
        parts.append("<p class=\"legend\"><span><span class=\"tok cor\">&nbsp;corrupted&nbsp;</span></span>"
                     "<span><span class=\"tok rec\">&nbsp;recovered&nbsp;</span></span>"
                     "<span><span class=\"tok fail\">&nbsp;not recovered&nbsp;</span></span>"
                     "<span><span class=\"tok unst\">&nbsp;untouched but broken&nbsp;</span></span></p>")
        at = frame[np.isclose(frame["t0"].to_numpy(dtype=float), t_mid)]
        for split in sorted(set(at["split"]), key=lambda x: (x != "train", x)):
            sub = at[at["split"] == split].sort_values("example_id", kind="stable").head(examples_per_split)
            for _, row in sub.iterrows():
                parts.append(_recovery_rows_html(row, decode))
    prov = summary.get("provenance") or {}
    flat: list = [("checkpoint", ckpt)]
    for key in sorted(prov):
        if key not in ("verdict", "reason"):
            flatten(key, prov[key], flat)
    parts.append("<h2>Provenance</h2>")
    parts.append(table([(k, str(v)) for k, v in flat], ["field", "value"], mono_cols=(1,)))
    parts.append(f"<footer>Written by memaudit {esc(summary.get('memaudit_version', ''))} from summary.json, "
                 "recovery.parquet. Rates are fractions of tokens; entropies in nats.</footer>")
    return html_page(f"memaudit recovery: {verdict} · {ckpt}", "\n".join(parts))


def render_recovery_html(result, decode: Callable[[list[int]], str | None] | None = None) -> bytes:
    """report.html of an in-memory RecoveryResult — the same bytes `write_recovery_html` builds from
    the files `report.write_recovery_report(result, DIR)` writes."""
    from ..io import finite_json
    from .tables import json_bytes

    doc = {**result.summary(include_timings=False), "provenance": finite_json(result.provenance())}
    summary = json.loads(json_bytes(doc))
    return recovery_html(summary, result.table().to_pandas(), decode=decode).encode("utf-8")


def write_recovery_html(out_dir: str | Path, decode: Callable[[list[int]], str | None] | None = None,
                        name: str = REPORT_NAME) -> Path:
    """Build report.html from what `memaudit recover --out DIR` wrote (summary.json,
    recovery.parquet); returns its path."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    path = out_dir / "recovery.parquet"
    frame = pq.read_table(path).to_pandas() if path.exists() else None
    return write_html(out_dir / name, recovery_html(summary, frame, decode=decode))
