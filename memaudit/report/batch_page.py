"""index.html of a scan over many checkpoints: the statistics across checkpoints — against the
training step when every scanned checkpoint has one (a training run: where it starts to memorize),
else in the order given — beside the table with a link to each checkpoint's report.html.

Built with the kit of memaudit.report.html (page shell, escaped tables, deterministic figures,
the verdict palette); the same table gives the same bytes.
"""
from __future__ import annotations

import json
import math

from .html import VERDICT_COLORS, VERDICT_PLOT_STYLE, esc, html_page, img, new_figure, table

FAILED_COLOR = "#344054"


def _number(value, pattern: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return pattern.format(value)


def across_figure(frame):
    """Mean entropy (with its CI) and the share of samples returning whole after re-noising,
    per checkpoint, coloured by verdict; failed checkpoints as grey marks on the axis."""
    scanned = frame[frame["status"] == "scanned"]
    by_step = len(scanned) > 0 and scanned["step"].notna().all()
    x_all = frame["step"] if by_step else list(range(len(frame)))
    fig = new_figure(9.0, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (_, row) in enumerate(frame.iterrows()):
        x = x_all.iloc[i] if by_step else i
        if row["status"] != "scanned":
            if not _isna(x):
                top.axvline(x, color=FAILED_COLOR, alpha=0.3, linestyle=":")
            continue
        style = VERDICT_PLOT_STYLE.get(row["verdict"], {"color": FAILED_COLOR, "marker": "s"})
        lo, hi = row.get("mean_entropy_lo"), row.get("mean_entropy_hi")
        yerr = None
        if not _isna(lo) and not _isna(hi):
            yerr = [[max(row["mean_entropy"] - lo, 0.0)], [max(hi - row["mean_entropy"], 0.0)]]
        top.errorbar([x], [row["mean_entropy"]], yerr=yerr, fmt=style["marker"], color=style["color"], capsize=3,
                     markersize=7)
        if not _isna(row.get("basin_return_rate")):
            bottom.plot([x], [row["basin_return_rate"]], style["marker"], color=style["color"], markersize=7)
    if len(scanned) > 1:
        xs = scanned["step"] if by_step else [i for i, s in enumerate(frame["status"]) if s == "scanned"]
        top.plot(list(xs), list(scanned["mean_entropy"]), color="#98a2b3", linewidth=1, zorder=0)
    top.set_ylabel("mean conditional entropy (nats)")
    bottom.set_ylabel("samples returning whole")
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_xlabel("training step" if by_step else "checkpoint (in the order given)")
    if not by_step:
        bottom.set_xticks(list(range(len(frame))))
        bottom.set_xticklabels([str(s)[:18] for s in frame["slug"]], rotation=30, ha="right", fontsize=7)
    first = first_memorizing_step(frame) if by_step else None
    if first is not None:   # where the run starts to memorize, on both panels
        for ax in (top, bottom):
            ax.axvline(first, color=VERDICT_PLOT_STYLE["memorizing"]["color"], linestyle="--", linewidth=1.2)
        top.annotate(f"first memorizing: step {first:g}", xy=(first, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(4, -12), textcoords="offset points", fontsize=8,
                     color=VERDICT_PLOT_STYLE["memorizing"]["color"])
    handles = [top.plot([], [], s["marker"], color=s["color"], label=v)[0] for v, s in VERDICT_PLOT_STYLE.items()]
    top.legend(handles=handles, loc="best", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def first_memorizing_step(frame):
    """The smallest training step with a memorizing verdict (None when no checkpoint with a step is)."""
    memorizing = frame[(frame["verdict"] == "memorizing") & frame["step"].notna()]
    return None if not len(memorizing) else float(memorizing["step"].min())


def _isna(value) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _reason(r) -> str:
    """The reason (or error) cell, marked when the report was reused from an earlier run."""
    text = r["reason"] or r["error"] or ""
    reused = r.get("reused")
    return text if not (isinstance(reused, (bool, int)) or hasattr(reused, "dtype")) or not reused \
        else f"{text} · reused report"


def batch_index_html(frame, settings: dict, rule: dict) -> str:
    """The page of a scan over several checkpoints."""
    counts = {v: int((frame["verdict"] == v).sum()) for v in VERDICT_COLORS}
    failed = int((frame["status"] != "scanned").sum())
    parts = [f"<h1>memaudit scan · {len(frame)} checkpoints</h1>",
             "<p class=\"sub\">" + esc(" · ".join(f"{n} {v}" for v, n in counts.items())
                                      + f" · {failed} failed") + "</p>"]
    memorizing = frame[(frame["verdict"] == "memorizing") & frame["step"].notna()]
    if len(memorizing):
        parts.append(f"<p class=\"note\">First memorizing checkpoint by training step: "
                     f"{esc(memorizing.sort_values('step').iloc[0]['checkpoint'])} "
                     f"(step {int(memorizing['step'].min())}).</p>")
    if (frame["status"] == "scanned").any():
        parts.append(img(across_figure(frame), "statistics across checkpoints",
                         "Mean conditional entropy (95% CI) and the share of samples that return whole after "
                         "re-noising, per checkpoint, coloured by verdict; dotted lines: failed checkpoints."))
    rows = []
    for _, r in frame.iterrows():
        ci = (f"[{_number(r.get('mean_entropy_lo'))}, {_number(r.get('mean_entropy_hi'))}]"
              if r["status"] == "scanned" else "")
        rows.append((r["checkpoint"], "" if _isna(r["step"]) else int(r["step"]),
                     r["verdict"] or r["status"], _reason(r),
                     _number(r.get("mean_entropy")), ci, _number(r.get("entropy_ratio"), "{:.1%}"),
                     _number(r.get("basin_return_rate"), "{:.1%}"), _number(r.get("duplicate_rate"), "{:.1%}")))
    parts.append("<h2>Checkpoints</h2>")
    parts.append(table(rows, ["checkpoint", "step", "verdict", "reason / error", "mean H (nats)", "95% CI",
                              "H / ln V", "return whole", "duplicates"], num_cols=(1, 4, 5, 6, 7, 8)))
    links = [f"<li><a href=\"{esc(s)}/report.html\">{esc(c)}</a></li>"
             for s, c, st in zip(frame["slug"], frame["checkpoint"], frame["status"]) if st == "scanned"]
    if links:
        parts.append("<h2>Reports</h2><ul>" + "".join(links) + "</ul>")
    parts.append("<h2>Settings and rule</h2><pre>" + esc(json.dumps({"settings": settings, "rule": rule},
                                                                    indent=2, sort_keys=True, default=str)) + "</pre>")
    return html_page(f"memaudit scan · {len(frame)} checkpoints", "\n".join(parts))
