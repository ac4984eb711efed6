"""report.html of a scan: the reviewer's one-page view (verdict and rule, statistics with CIs,
entropy histogram and per-position heat map, the lowest-entropy samples, provenance).

`write_scan_html(out_dir)` reads what a scan wrote into its --out directory (summary.json,
samples.parquet, tokens.parquet) and writes `report.html` next to them; `render_scan_html(result)`
gives the same bytes from an in-memory ScanResult (report.files writes it with the other files).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .ci import checkpoint_name, ci_level, domain_line, fmt_value, key_statistics, rule_line
from .html import (HEATMAP_MAX_ROWS, LOWEST_SAMPLES, REPORT_NAME, VERDICT_COLORS, esc, flatten, html_page, img,
                   loading_notes, local_decoder, new_figure, table, token_pieces, visible, write_html)

def read_scan_dir(out_dir: str | Path) -> tuple[dict, "object", "object"]:
    """(summary dict, samples DataFrame, tokens DataFrame) of a scan's --out directory."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    samples = pq.read_table(out_dir / "samples.parquet").to_pandas()
    tokens = pq.read_table(out_dir / "tokens.parquet").to_pandas()
    return summary, samples, tokens


def entropy_matrix(summary: dict, tokens) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids [N], entropy [N, L] float32) at the scan's primary t_eval."""
    if "t_eval" in tokens.columns:
        t_eval = float(summary.get("t_eval", tokens["t_eval"].iloc[0]))
        tokens = tokens[np.isclose(tokens["t_eval"].to_numpy(), t_eval, rtol=1e-9, atol=0)]
    sample_ids = np.unique(tokens["sample_id"].to_numpy())
    length = int(tokens["position"].max()) + 1 if len(tokens) else 0
    row = np.searchsorted(sample_ids, tokens["sample_id"].to_numpy())
    mat = np.full((len(sample_ids), length), np.nan, dtype=np.float32)
    mat[row, tokens["position"].to_numpy()] = tokens["entropy"].to_numpy(dtype=np.float32)
    return sample_ids, mat


def _thresholds(summary: dict) -> dict:
    th = (summary.get("rule") or {}).get("thresholds") or {}
    return {"memorizing": (th.get("memorizing") or {}).get("mean_entropy_max"),
            "generalizing": (th.get("generalizing") or {}).get("mean_entropy_min")}


def histogram_figure(summary: dict, sample_means: np.ndarray):
    max_h = float(summary.get("max_entropy") or max(float(np.nanmax(sample_means)), 1.0))
    fig = new_figure(9.6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    hi = max(max_h, float(np.nanmax(sample_means)) if len(sample_means) else 0.0) * 1.02
    ax.hist(sample_means, bins=60, range=(0.0, hi), color="#475467", edgecolor="white", linewidth=0.3)
    th = _thresholds(summary)
    ymax = ax.get_ylim()[1]
    if th["memorizing"] is not None:
        ax.axvline(th["memorizing"], color=VERDICT_COLORS["memorizing"], ls="--", lw=1.2,
                   label=f"memorizing if H̄ < {th['memorizing']:g}")
    if th["generalizing"] is not None:
        ax.axvline(th["generalizing"], color=VERDICT_COLORS["generalizing"], ls="--", lw=1.2,
                   label=f"generalizing if H̄ > {th['generalizing']:g}")
    ax.axvline(max_h, color="#98a2b3", ls=":", lw=1.2, label=f"ln V = {max_h:.3g}")
    if "mean_entropy" in summary:
        m = float(summary["mean_entropy"])
        ci = summary.get("mean_entropy_ci")
        if ci:
            ax.axvspan(ci[0], ci[1], color="#2e90fa", alpha=0.25, lw=0)
        ax.axvline(m, color="#1570ef", lw=1.5, label=f"H̄ = {m:.3g} ({ci_level(summary)} shaded)")
    ax.set_ylim(0, ymax)
    ax.set_xlabel("per-sample mean conditional entropy (nats)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8, frameon=False, loc="upper center", ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def heatmap_figure(summary: dict, mat: np.ndarray, order: np.ndarray):
    rows = order
    if len(rows) > HEATMAP_MAX_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, HEATMAP_MAX_ROWS).round().astype(int)]
    data = mat[rows]
    max_h = float(summary.get("max_entropy") or np.nanmax(data))
    height = 2.0 + min(4.0, 0.03 * len(rows))
    fig = new_figure(9.6, height)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=max_h)
    ax.set_xlabel("position")
    ax.set_ylabel("samples, lowest mean entropy at top")
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("entropy (nats)")
    return fig


def profile_figure(summary: dict):
    prof = summary.get("profile") or []
    if len(prof) < 2:
        return None
    t = [p["t"] for p in prof]
    h = [p["mean_entropy"] for p in prof]
    fig = new_figure(5.0, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(t, h, marker="o", color="#1570ef")
    ax.set_xscale("log")
    ax.set_xlabel("evaluation time t")
    ax.set_ylabel("mean entropy (nats)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def sample_block(row, entropies: np.ndarray, tau: float, decode, copies: int = 1) -> str:
    ids = [int(i) for i in row["token_ids"]]
    text = row.get("text")
    pieces = token_pieces(decode, ids) if (decode is not None and isinstance(text, str)) else None
    spans = []
    for k, tid in enumerate(ids):
        h = float(entropies[k]) if k < len(entropies) else float("nan")
        level = "low" if h < tau else "mid" if h < 1.0 else ""
        title = f"position {k}, token id {tid}, H = {h:.3g} nats"
        if pieces is not None:
            shown = visible(pieces[k]) or "∅"
            spans.append(f"<span class=\"tok {level}\" title=\"{esc(title)}\">{esc(shown)}</span>")
        else:
            spans.append(f"<span class=\"tok id {level}\" title=\"{esc(title)}\">{tid}</span>")
    flags = []
    if copies > 1:
        flags.append(f"generated {copies} times")
    elif bool(row.get("is_duplicate")):
        dup = row.get("duplicate_of")
        flags.append(f"duplicate of #{int(dup)}" if dup is not None and not _isnan(dup) else "duplicate")
    if bool(row.get("is_fixed_point")):
        flags.append("fixed point")
    elif row.get("fixed_point_distance") is not None and not _isnan(row["fixed_point_distance"]):
        flags.append(f"{float(row['fixed_point_distance']):.0%} of tokens rewritten by the greedy dynamics")
    meta = (f"#{int(row['sample_id'])} · mean H = {float(row['mean_entropy']):.3g} nats · "
            f"{float(row['low_entropy_fraction']):.0%} of tokens below τ")
    if flags:
        meta += " · " + ", ".join(flags)
    body = f"<div class=\"toks\">{''.join(spans)}</div>"
    if isinstance(text, str) and pieces is None:
        body += f"<details><summary>decoded text</summary><div class=\"text\">{esc(text)}</div></details>"
    return f"<div class=\"sample\"><div class=\"meta\">{esc(meta)}</div>{body}</div>"


def _isnan(x) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def provenance_rows(summary: dict) -> list[tuple[str, str]]:
    prov = summary.get("provenance") or {}
    rows: list[tuple[str, str]] = [("checkpoint", checkpoint_name(summary))]
    model = prov.get("model") or summary.get("model") or {}
    for key in ("family", "weights", "vocab_size", "seq_len", "n_parameters", "time_input", "has_tokenizer",
                "hub_id", "revision"):
        if key in model:
            rows.append((f"model.{key}", str(model[key])))
    rest: list = []
    for key in sorted(model):
        if key not in {"checkpoint", "family", "weights", "vocab_size", "seq_len", "n_parameters", "time_input",
                       "has_tokenizer", "hub_id", "revision"}:
            flatten(f"model.{key}", model[key], rest)
    rows += [(k, str(v)) for k, v in rest]
    for key in ("memaudit_version", "torch_version", "numpy_version", "python_version"):
        if key in prov:
            rows.append((key, str(prov[key])))
    other: list = []
    for section in ("sampler", "seeds", "settings"):
        if section in prov or section in summary:
            flatten(section, prov.get(section, summary.get(section)), other)
    rows += [(k, str(v)) for k, v in other]
    return rows


def scan_html(summary: dict, samples, tokens, decode: Callable[[list[int]], str | None] | None = None,
              artifacts: Iterable[str] = ("summary.json", "samples.parquet", "tokens.parquet")) -> str:
    """The report page of a scan, from its summary document and its two Parquet tables."""
    verdict = str(summary.get("verdict", "inconclusive"))
    reason = str(summary.get("reason", ""))
    rule = summary.get("rule") or {}
    tau = float(summary.get("tau", rule.get("tau", 0.1)))
    color = VERDICT_COLORS.get(verdict, VERDICT_COLORS["inconclusive"])
    gate = {"generalizing": "gate passed", "memorizing": "gate failed"}.get(verdict, "could not decide")
    ckpt = checkpoint_name(summary)
    parts = [f"<h1>memaudit scan report</h1><p class=\"sub\">{esc(ckpt)}</p>"]
    parts.append(f"<div class=\"verdict\" id=\"verdict\" style=\"background:{color}\">"
                 f"<span class=\"label\">{esc(verdict)}</span><span class=\"gate\">{esc(gate)} · reason: "
                 f"{esc(reason)}</span><p>{esc(summary.get('explanation', ''))}</p>"
                 f"<p class=\"rule\">rule: {esc(rule_line(summary))}</p>"
                 f"<p class=\"rule\">domain: {esc(domain_line(summary))}</p></div>")
    parts.append(loading_notes((summary.get("provenance") or {}).get("model") or summary.get("model") or {}))
    if rule.get("status") == "provisional":
        parts.append("<div class=\"note\"><b>Provisional rule.</b> The thresholds of this decision rule are not "
                     "yet calibrated on reference models of known regime; read the verdict with that in mind.</div>")

    # -- statistics
    level = ci_level(summary)
    stat_rows = [(r["label"], r["value"] + (f" {r['unit']}" if r["unit"] else ""), r["ci"])
                 for r in key_statistics(summary)]
    for key, label in (("n_samples", "samples"), ("seq_len", "sequence length L"), ("vocab_size", "vocabulary V"),
                       ("t_eval", "evaluation time t_eval"), ("tau", "τ, low-entropy threshold (nats)")):
        if key in summary:
            stat_rows.append((label, fmt_value(summary[key], "{:.4g}"), ""))
    q = summary.get("sample_entropy_quantiles") or {}
    if q:
        stat_rows.append(("per-sample mean H, quantiles p05 / p25 / p50 / p75 / p95",
                          " / ".join(f"{float(q[k]):.3g}" for k in sorted(q)) + " nats", ""))
    parts.append("<h2>Statistics</h2>")
    parts.append(table(stat_rows, ["statistic", "value", level], num_cols=(1,)))
    parts.append("<p class=\"sub\">Confidence intervals: percentile bootstrap over samples. H is the entropy of "
                 "the model's x0 prediction at each position of its own samples, in nats.</p>")

    # -- figures
    means = samples["mean_entropy"].to_numpy(dtype=np.float64)
    parts.append("<h2>Entropy across samples</h2>")
    parts.append(img(histogram_figure(summary, means), "histogram of per-sample mean entropy",
                     "Per-sample mean conditional entropy (nats). Dashed lines: the rule's thresholds, which apply "
                     "to the mean over samples (shaded: its confidence interval)."))
    sample_ids, mat = entropy_matrix(summary, tokens)
    by_id = dict(zip(samples["sample_id"].to_numpy().tolist(), means.tolist()))
    order = np.argsort(np.array([by_id.get(int(s), np.nan) for s in sample_ids]), kind="stable")
    if mat.size:
        shown = min(len(order), HEATMAP_MAX_ROWS)
        parts.append(img(heatmap_figure(summary, mat, order), "per-position entropy heat map",
                         f"Entropy (nats) at every position of {shown} of {len(order)} samples, sorted by mean "
                         "entropy (lowest at the top). Dark: the model is certain of the token given the rest."))
    pfig = profile_figure(summary)
    if pfig is not None:
        parts.append(img(pfig, "entropy against evaluation time", "Mean entropy at each evaluation time."))

    # -- lowest-entropy samples: distinct sequences only (a memorizing model repeats itself)
    row_of = {int(s): i for i, s in enumerate(sample_ids)}
    if decode is None:
        decode = local_decoder(summary)
    ordered = samples.sort_values(["mean_entropy", "sample_id"], kind="stable")
    copies: dict[tuple, int] = {}
    for ids in samples["token_ids"]:
        key = tuple(int(i) for i in ids)
        copies[key] = copies.get(key, 0) + 1
    shown_keys: list[tuple] = []
    chosen = []
    for _, row in ordered.iterrows():
        key = tuple(int(i) for i in row["token_ids"])
        if key in copies and key not in shown_keys:
            shown_keys.append(key)
            chosen.append((row, copies[key]))
        if len(chosen) == LOWEST_SAMPLES:
            break
    parts.append(f"<h2>The {len(chosen)} lowest-entropy distinct samples</h2>")
    parts.append(f"<p class=\"legend\"><span><span class=\"tok low\">&nbsp;H &lt; τ = {tau:g}&nbsp;</span></span>"
                 "<span><span class=\"tok mid\">&nbsp;τ ≤ H &lt; 1 nat&nbsp;</span></span>"
                 "<span>unmarked: H ≥ 1 nat</span><span>(hover a token for its entropy)</span></p>")
    for row, n_copies in chosen:
        ent = mat[row_of[int(row["sample_id"])]] if int(row["sample_id"]) in row_of else np.array([])
        parts.append(sample_block(row, ent, tau, decode, n_copies))

    if "training_data" in summary:
        parts.append(training_section(summary["training_data"], samples, decode))
    from .stored_page import stored_section

    parts.append(stored_section(summary))

    # -- rule
    parts.append("<h2>Decision rule</h2>")
    rule_rows = []
    for key in ("name", "version", "status", "source", "sha256", "t_eval", "tau", "min_samples", "confidence"):
        if key in rule:
            rule_rows.append((key, str(rule[key])))
    flat: list = []
    for section in ("thresholds", "undertrained"):
        if section in rule:
            flatten(section, rule[section], flat)
    rule_rows += [(k, str(v)) for k, v in flat]
    parts.append(table(rule_rows, ["field", "value"], mono_cols=(1,)))

    # -- provenance
    parts.append("<h2>Provenance</h2>")
    parts.append(table(provenance_rows(summary), ["field", "value"], mono_cols=(1,)))
    names = ", ".join(artifacts)
    parts.append(f"<footer>Written by memaudit {esc(summary.get('memaudit_version', ''))} from {esc(names)}. "
                 "Units: nats. Schema: docs/report-schema.md.</footer>")
    return html_page(f"memaudit: {verdict} · {ckpt}", "\n".join(parts))


def token_row(ids, other, decode) -> str:
    """One sequence as tokens, those that differ from `other` (same length) marked."""
    pieces = token_pieces(decode, ids) if decode is not None else None
    spans = []
    for k, tid in enumerate(ids):
        diff = " diff" if k < len(other) and other[k] != tid else ""
        title = f"position {k}, token id {tid}" + (" (differs)" if diff else "")
        if pieces is not None:
            spans.append(f"<span class=\"tok{diff}\" title=\"{esc(title)}\">{esc(visible(pieces[k]) or '∅')}</span>")
        else:
            spans.append(f"<span class=\"tok id{diff}\" title=\"{esc(title)}\">{tid}</span>")
    return f"<div class=\"toks\">{''.join(spans)}</div>"


def training_section(training: dict, samples, decode) -> str:
    """Evidence with training data (scan --train): statistics, then the copies found, each beside
    the training window it matches with the differing tokens marked."""
    idx = training.get("index") or {}
    data = training.get("data") or {}
    level = "95% CI"
    pct = lambda v: fmt_value(v, "{:.1%}")  # noqa: E731
    ci = lambda v: "[" + ", ".join(pct(x) for x in v) + "]" if v else ""  # noqa: E731
    q = training.get("longest_span_quantiles") or {}
    rows = [("training copies (exact) among samples", f"{training.get('n_training_copies')} · "
             f"{pct(training.get('extraction_rate'))}", ci(training.get("extraction_rate_ci"))),
            (f"near copies (≤ {idx.get('near_copy_max_distance')} tokens differ)",
             f"{training.get('n_near_copies')} · {pct(training.get('near_copy_rate'))}",
             ci(training.get("near_copy_rate_ci"))),
            ("longest verbatim training span, p50 / p90 / max (tokens)",
             f"{fmt_value(q.get('p50'), '{:g}')} / {fmt_value(q.get('p90'), '{:g}')} / {q.get('max')}", "")]
    for g in training.get("entropy_gap") or []:
        f4 = lambda v: fmt_value(v, "{:.4f}")  # noqa: E731
        cis = lambda v: "[" + ", ".join(f4(x) for x in v) + "]"  # noqa: E731
        rows += [(f"mean entropy at t = {g['t']:g}: training sequences (nats)", f4(g["train_mean_entropy"]),
                  cis(g["train_mean_entropy_ci"])),
                 ("… generated samples (nats)", f4(g["sample_mean_entropy"]), cis(g["sample_mean_entropy_ci"])),
                 ("… entropy gap, samples − training (nats)", f4(g["entropy_gap"]), cis(g["entropy_gap_ci"]))]
    parts = ["<h2>Evidence with training data</h2>",
             "<div class=\"note\"><b>Beside the verdict.</b> These numbers use the training data you supplied "
             f"({esc(data.get('source', ''))}: {esc(idx.get('n_documents'))} examples, {esc(idx.get('n_tokens'))} "
             "tokens); the verdict above is the data-free rule's and the exit code follows it alone.</div>",
             table(rows, ["statistic", "value", level], num_cols=(1,))]
    near = samples[samples["is_near_copy"]] if "is_near_copy" in samples else samples.iloc[:0]
    seen, shown = set(), []
    near = near.assign(_exact=near["nearest_train_distance"] == 0) if len(near) else near
    order = ["_exact", "nearest_train_distance", "sample_id"] if len(near) else []
    for _, row in (near.sort_values(order, kind="stable") if len(near) else near).iterrows():
        key = tuple(int(i) for i in row["token_ids"])       # inexact copies first: they show what differs
        if key not in seen:
            seen.add(key)
            if len(shown) < LOWEST_SAMPLES:
                shown.append(row)
    if shown:
        parts.append(f"<h3>{len(shown)} of {len(seen)} distinct near copies, beside the training text they "
                     "match</h3>")
        parts.append("<p class=\"legend\"><span><span class=\"tok diff\">&nbsp;differs&nbsp;</span></span>"
                     "<span>training window: document (example) id and token offset in the packed stream</span></p>")
    for row in shown:
        ids = [int(i) for i in row["token_ids"]]
        train = [int(i) for i in row["nearest_train_token_ids"]]
        d = int(row["nearest_train_distance"])
        meta = (f"sample #{int(row['sample_id'])} · " + ("exact training copy" if d == 0 else f"{d} tokens differ")
                + f" · training example {int(row['nearest_train_id'])}, offset {int(row['nearest_train_offset'])}"
                + f" · longest verbatim span {int(row['longest_train_span'])} tokens")
        parts.append(f"<div class=\"sample\"><div class=\"meta\">{esc(meta)}</div>"
                     f"<div class=\"meta\">generated</div>{token_row(ids, train, decode)}"
                     f"<div class=\"meta\">training</div>{token_row(train, ids, decode)}</div>")
    if not shown:
        parts.append("<p>No generated sample lies within the near-copy distance of the training text.</p>")
    return "\n".join(parts)


def render_scan_html(result, decode: Callable[[list[int]], str | None] | None = None) -> bytes:
    """report.html of an in-memory ScanResult — the same bytes `write_scan_html` builds from the
    files `report.write_report(result, DIR)` writes (for report.files' REPORT_FILES, so the page is written
    atomically together with the other report files)."""
    from .tables import json_bytes, samples_table, summary_document, tokens_table

    summary = json.loads(json_bytes(summary_document(result)))
    page = scan_html(summary, samples_table(result).to_pandas(), tokens_table(result).to_pandas(), decode=decode)
    return page.encode("utf-8")


def write_scan_html(out_dir: str | Path, decode: Callable[[list[int]], str | None] | None = None,
                    name: str = REPORT_NAME) -> Path:
    """Build report.html from the files a scan wrote into `out_dir`; returns its path.

    decode: optional ids → text function (e.g. a Denoiser's `.decode`) to show samples token by
    token as text; without it the checkpoint's tokenizer.json is used when the checkpoint is a local
    directory, else the token ids are shown (with the decoded text from samples.parquet below).
    """
    out_dir = Path(out_dir)
    summary, samples, tokens = read_scan_dir(out_dir)
    page = scan_html(summary, samples, tokens, decode=decode)
    return write_html(out_dir / name, page)

