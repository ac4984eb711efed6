"""report.html sections of the stored-subset evidence: the data-free search (summary
`stored_subset`) and, with --train, the most exposed training blocks (`training_data.documents`)."""
from __future__ import annotations

from .html import esc, table


def _f(v, digits: int = 2) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def stored_section(summary: dict) -> str:
    stored = summary.get("stored_subset")
    docs = (summary.get("training_data") or {}).get("documents")
    parts = []
    if stored is not None:
        base = stored.get("baseline") or {}
        parts.append("<h2>Stored subset (data-free search)</h2>")
        parts.append("<div class=\"note\"><b>Beside the verdict.</b> The search runs the model's own dynamics to "
                     "convergence from many starts and keeps long low-entropy spans that come back after "
                     "re-noising more often than the model's typical text (docs/method.md, “Stored subsets”). "
                     f"Finding: <b>{esc(summary.get('finding') or summary.get('verdict', ''))}</b>.</div>")
        rows = [("starts", ", ".join(f"{k} {v}" for k, v in (stored.get("start_kinds") or {}).items())),
                ("candidates measured", str(len(stored.get("candidates") or []))),
                ("stored sequences found", str(stored.get("found"))),
                ("estimated number held (Chao1, 95% CI)",
                 f"{_f(stored.get('estimate'), 1)} {[round(x, 1) for x in stored.get('estimate_ci') or []]}"),
                ("typical basin (mean / q95)", f"{_f(base.get('mean'))} / {_f(base.get('q95'))}" if base else "–"),
                ("network calls (rows)", str(stored.get("network_calls"))),
                ("low-entropy starts (reported only)", ", ".join(
                    f"{k} {v['n']}/{v['of']}" for k, v in (stored.get("low_entropy_starts") or {}).items()) or "–")]
        parts.append(table(rows, ["field", "value"], mono_cols=(1,)))
        cands = stored.get("candidates") or []
        if cands:
            crow = [(("stored" if c["stored"] else "candidate"), str(c["length"]), str(c["recurrence"]),
                     " / ".join(_f(v) for v in c["basin"].values()), _f(c["mean_entropy"], 3),
                     (c.get("text") or " ".join(map(str, c["tokens"])))[:200]) for c in cands]
            parts.append(table(crow, ["", "tokens", "recurrence", "basin (per t0)", "H (nats)", "text"],
                               mono_cols=(5,)))
    if docs:
        parts.append("<h2>Most exposed training blocks</h2>")
        parts.append(f"<p>Restoration at t0 = {docs['t0']:g} of training blocks against the model's own samples "
                     f"(mean {_f(docs.get('samples_mean_restoration'))}); stored above "
                     f"{_f(docs.get('stored_threshold'))}: {docs.get('n_stored')} of {docs.get('n_measured')} "
                     f"measured; stored share of the training set ≈ {_f(docs.get('stored_share'), 3)} "
                     f"[{', '.join(_f(x, 3) for x in docs.get('stored_share_ci') or [])}].</p>")
        drow = [(str(e["document"]), _f(e["restoration_rate"]), str(e["duplication_count"]),
                 "yes" if e["stored"] else "no", (e.get("text") or "")[:200]) for e in docs.get("most_exposed") or []]
        parts.append(table(drow, ["block", "restoration", "duplication", "stored", "text"], mono_cols=(4,)))
    return "\n".join(parts)
