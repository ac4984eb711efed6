"""report.html: the reviewer's one-page view of a scan (and of recovery / sweep results).

`write_scan_html(out_dir)` reads what a scan wrote into its --out directory (summary.json,
samples.parquet, tokens.parquet) and writes `report.html` next to them. The page is
self-contained: inline CSS, figures embedded as base64 PNG data URIs, no script, no network.

`render_scan_html(result)` gives the same bytes from an in-memory ScanResult (report.py's
REPORT_FILES uses it, so report.html is written atomically with the other files);
`write_recovery_html(out_dir)` / `render_recovery_html(result)` do the same for `memaudit recover`.

Reusable pieces for other pages (the sweep's index.html, …):

    figure_data_uri(fig)      a matplotlib Figure → "data:image/png;base64,…" (deterministic)
    new_figure(w, h)          a Figure on the Agg canvas (no pyplot, no global state)
    img(fig, alt)             <img> tag of a figure
    table(rows, header)       an escaped HTML table
    html_page(title, body)    the page shell (CSS included)
    write_html(path, text)    atomic write

Identical inputs give identical bytes: no timestamps, PNG metadata without the Software key,
fixed figure sizes and fonts.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .io import atomic_write_bytes
from .ci_outputs import checkpoint_name, ci_level, fmt_value, key_statistics, rule_line

REPORT_NAME = "report.html"
LOWEST_SAMPLES = 8          # lowest-entropy samples shown as text
HEATMAP_MAX_ROWS = 256      # heat-map rows (samples) drawn at most; evenly spaced when there are more
VERDICT_COLORS = {"memorizing": "#b42318", "generalizing": "#067647", "inconclusive": "#b54708"}


# ----------------------------------------------------------------------------- page building
CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2939; margin: 0; background: #f9fafb; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid #eaecf0; padding-bottom: 4px; }
.sub { color: #475467; margin: 0 0 16px; word-break: break-all; }
.verdict { border-radius: 10px; padding: 16px 20px; color: #fff; margin: 12px 0; }
.verdict .label { font-size: 28px; font-weight: 700; letter-spacing: .02em; }
.verdict .gate { font-size: 15px; opacity: .95; margin-left: 10px; }
.verdict p { margin: 8px 0 0; }
.verdict p.rule { font-size: 13px; opacity: .9; }
.note { background: #fffaeb; border: 1px solid #fec84b; border-radius: 8px; padding: 10px 14px; margin: 10px 0; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; font-size: 14px; }
th, td { border: 1px solid #eaecf0; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono, span.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; overflow-wrap: anywhere; }
figure { margin: 8px 0 16px; background: #fff; border: 1px solid #eaecf0; border-radius: 8px; padding: 8px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #475467; font-size: 13px; margin-top: 4px; }
.sample { background: #fff; border: 1px solid #eaecf0; border-radius: 8px; padding: 8px 12px; margin: 8px 0; }
.sample .meta { color: #475467; font-size: 13px; margin-bottom: 4px; }
.toks { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; line-height: 1.9;
        white-space: pre-wrap; word-break: break-all; }
.tok { border-radius: 2px; padding: 1px 0; box-shadow: inset -1px 0 #d0d5dd; }
.tok.id { padding: 1px 3px; margin-right: 3px; background: #f2f4f7; }
.tok.low { background: #fda29b; }
.tok.mid { background: #fedf89; }
.tok.cor { background: #b2ddff; }
.tok.rec { background: #a6f4c5; }
.tok.fail { background: #fda29b; }
.tok.unst { background: #fedf89; }
.legend span { margin-right: 12px; }
.text { color: #344054; font-size: 13px; white-space: pre-wrap; word-break: break-word; margin-top: 4px; }
details > summary { cursor: pointer; color: #344054; }
footer { color: #667085; font-size: 12px; margin-top: 32px; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def html_page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            # No network at all: the page may only use data: images and its own inline style.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            "</body>\n</html>\n")


def table(rows: Iterable[Sequence], header: Sequence[str] | None = None, num_cols: Iterable[int] = (),
          mono_cols: Iterable[int] = ()) -> str:
    """An HTML table; every cell is escaped. num_cols / mono_cols: column indices to right-align /
    set in monospace."""
    num_cols, mono_cols = set(num_cols), set(mono_cols)
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = "num" if i in num_cols else "mono" if i in mono_cols else ""
            cells.append(f"<td class=\"{cls}\">{esc(cell)}</td>" if cls else f"<td>{esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_html(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------- figures
def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot (no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "memaudit", "font.family": "DejaVu Sans"}):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight",
                    pad_inches=0.08)
    return buf.getvalue()


def figure_data_uri(fig, dpi: int = 100) -> str:
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def img(fig, alt: str, caption: str = "", dpi: int = 100) -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt=\"{esc(alt)}\" src=\"{figure_data_uri(fig, dpi)}\">{cap}</figure>"


# -------------------------------------------------------------------------------- scan report
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


def token_pieces(decode: Callable[[list[int]], str | None], ids: Sequence[int]) -> list[str] | None:
    """One display string per token whose concatenation equals decode(ids).

    Works with any decoder (byte-level BPE, WordPiece…): token k gets what decoding the first k+1
    tokens adds to decoding the first k; when a later token rewrites earlier text (a character
    completed across byte tokens), the rewritten text moves to the later token.
    """
    pieces: list[str] = []
    prev = ""
    for k in range(1, len(ids) + 1):
        cur = decode(list(ids[:k]))
        if cur is None:
            return None
        common = len(os.path.commonprefix([prev, cur]))
        excess = len(prev) - common
        j = len(pieces) - 1
        while excess > 0 and j >= 0:
            cut = min(len(pieces[j]), excess)
            pieces[j] = pieces[j][:len(pieces[j]) - cut]
            excess -= cut
            j -= 1
        pieces.append(cur[common:])
        prev = cur
    return pieces


def _local_decoder(summary: dict) -> Callable[[list[int]], str] | None:
    """A decoder from the checkpoint's tokenizer.json, when the checkpoint is a local directory
    that has one (a JSON file: nothing is executed)."""
    model = summary.get("model") or {}
    ckpt = model.get("checkpoint") or summary.get("checkpoint")
    if not ckpt or not model.get("has_tokenizer", True):
        return None
    path = Path(str(ckpt))
    candidate = path / "tokenizer.json" if path.is_dir() else None
    if candidate is None or not candidate.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(candidate))
    except Exception:  # noqa: BLE001 - the report falls back to token ids
        return None
    if model.get("vocab_size") and tok.get_vocab_size(with_added_tokens=True) > int(model["vocab_size"]):
        return None
    return lambda ids: tok.decode(ids, skip_special_tokens=False)


def _visible(piece: str) -> str:
    return piece.replace("\r", "␍").replace("\t", "⇥").replace("\n", "⏎\n")


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
            shown = _visible(pieces[k]) or "∅"
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


def _flatten(prefix: str, value, out: list):
    if isinstance(value, dict):
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        out.append((prefix, ", ".join(str(v) for v in value) if value else "(none)"))
    else:
        out.append((prefix, json.dumps(value, sort_keys=True) if isinstance(value, list) else value))


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
            _flatten(f"model.{key}", model[key], rest)
    rows += [(k, str(v)) for k, v in rest]
    for key in ("memaudit_version", "torch_version", "numpy_version", "python_version"):
        if key in prov:
            rows.append((key, str(prov[key])))
    other: list = []
    for section in ("sampler", "seeds", "settings"):
        if section in prov or section in summary:
            _flatten(section, prov.get(section, summary.get(section)), other)
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
                 f"<p class=\"rule\">rule: {esc(rule_line(summary))}</p></div>")
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
        decode = _local_decoder(summary)
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

    # -- rule
    parts.append("<h2>Decision rule</h2>")
    rule_rows = []
    for key in ("name", "version", "status", "source", "sha256", "t_eval", "tau", "min_samples", "confidence"):
        if key in rule:
            rule_rows.append((key, str(rule[key])))
    flat: list = []
    for section in ("thresholds", "undertrained"):
        if section in rule:
            _flatten(section, rule[section], flat)
    rule_rows += [(k, str(v)) for k, v in flat]
    parts.append(table(rule_rows, ["field", "value"], mono_cols=(1,)))

    # -- provenance
    parts.append("<h2>Provenance</h2>")
    parts.append(table(provenance_rows(summary), ["field", "value"], mono_cols=(1,)))
    names = ", ".join(artifacts)
    parts.append(f"<footer>Written by memaudit {esc(summary.get('memaudit_version', ''))} from {esc(names)}. "
                 "Units: nats. Schema: docs/report-schema.md.</footer>")
    return html_page(f"memaudit: {verdict} · {ckpt}", "\n".join(parts))


def render_scan_html(result, decode: Callable[[list[int]], str | None] | None = None) -> bytes:
    """report.html of an in-memory ScanResult — the same bytes `write_scan_html` builds from the
    files `result.write(DIR)` writes (for report.py's REPORT_FILES, so the page is written
    atomically together with the other report files)."""
    from .report import json_bytes, samples_table, summary_document, tokens_table

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


# ---------------------------------------------------------------------------------- recovery
def _num(x, pattern="{:.3g}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return pattern.format(x)


def _ci(ci, pattern="{:.3g}") -> str:
    if not ci or any(v is None for v in ci):
        return "—"
    return f"[{_num(ci[0], pattern)}, {_num(ci[1], pattern)}]"


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
        shown[name] = [(_visible(p) or "∅") for p in pieces] if pieces is not None else [str(i) for i in ids]
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
             f"{esc(summary.get('reason', ''))}</span><p>{esc(summary.get('explanation', ''))}</p></div>"]
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
                             _ci(g.get("gap_ci"))) for g in gaps],
                           ["t0", "train recovery", "test recovery", "train − test", "gap CI"], num_cols=(0, 1, 2, 3)))
    if summaries:
        rows = [(s["split"], _num(s["t0"], "{:g}"), str(s.get("n", "")), _num(s.get("mean_corrupted_fraction")),
                 _num(s.get("recovery_rate")), _ci(s.get("recovery_rate_ci")), _num(s.get("unstable_rate")),
                 _num(s.get("exact_match")), _num(s.get("entropy_recovered")), _num(s.get("entropy_failed")))
                for s in summaries]
        parts.append("<h2>Per split and corruption level</h2>")
        parts.append(table(rows, ["split", "t0", "examples", "corrupted share", "recovery", "recovery CI",
                                  "unstable rate", "exact match", "H recovered (nats)", "H failed (nats)"],
                           num_cols=range(1, 10)))
    if frame is not None and len(frame):
        t_values = sorted(set(frame["t0"].tolist()))
        t_mid = t_values[len(t_values) // 2]
        if decode is None:
            decode = _local_decoder(summary)
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
            _flatten(key, prov[key], flat)
    parts.append("<h2>Provenance</h2>")
    parts.append(table([(k, str(v)) for k, v in flat], ["field", "value"], mono_cols=(1,)))
    parts.append(f"<footer>Written by memaudit {esc(summary.get('memaudit_version', ''))} from summary.json, "
                 "recovery.parquet. Rates are fractions of tokens; entropies in nats.</footer>")
    return html_page(f"memaudit recovery: {verdict} · {ckpt}", "\n".join(parts))


def render_recovery_html(result, decode: Callable[[list[int]], str | None] | None = None) -> bytes:
    """report.html of an in-memory RecoveryResult — the same bytes `write_recovery_html` builds from
    the files `result.write(DIR)` writes (so RecoveryResult.write can add it to its write_files)."""
    from .recovery import finite_json
    from .report import json_bytes

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
