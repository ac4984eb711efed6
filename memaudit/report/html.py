"""The HTML kit of the scan, recovery and batch pages: page shell and CSS, escaped tables,
deterministic embedded figures, the verdict palette, and token rendering shared by the pages. The
sweep and calibration indexes (sweep_page.py) take only its palette and figure_png; they keep
their own page shell and pyplot figures.

`write_scan_html(out_dir)` reads what a scan wrote into its --out directory (summary.json,
samples.parquet, tokens.parquet) and writes `report.html` next to them. The page is
self-contained: inline CSS, figures embedded as base64 PNG data URIs, no script, no network.

`render_scan_html(result)` gives the same bytes from an in-memory ScanResult (report/files.py's
REPORT_FILES uses it, so report.html is written atomically with the other files);
`write_recovery_html(out_dir)` / `render_recovery_html(result)` do the same for `memaudit recover`.

Reusable pieces for other pages (the batch index.html, …):

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
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..io import atomic_write_bytes

REPORT_NAME = "report.html"
LOWEST_SAMPLES = 8          # lowest-entropy samples shown as text
HEATMAP_MAX_ROWS = 256      # heat-map rows (samples) drawn at most; evenly spaced when there are more
VERDICT_COLORS = {"memorizing": "#b42318", "generalizing": "#067647", "inconclusive": "#b54708"}
# Figures: a colour-blind-safe palette (Okabe & Ito) and a marker of its own per verdict, so the
# verdicts stay apart in greyscale and for every common colour-vision deficiency.
VERDICT_PLOT_STYLE = {"memorizing": {"color": "#D55E00", "marker": "X"},     # vermillion, cross
                      "generalizing": {"color": "#0072B2", "marker": "o"},   # blue, circle
                      "inconclusive": {"color": "#CC79A7", "marker": "^"}}   # reddish purple, triangle


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
.tok.diff { background: #fda29b; outline: 1px solid #b42318; }
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


def figure_png(fig, dpi: int = 100, pad_inches: float = 0.08) -> bytes:
    """PNG bytes of a figure, cropped to its content with `pad_inches` around it (the report pages
    use the defaults, the sweep pages their own: memaudit.report.sweep_page)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "memaudit", "font.family": "DejaVu Sans"}):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight",
                    pad_inches=pad_inches)
    return buf.getvalue()


def figure_data_uri(fig, dpi: int = 100) -> str:
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def img(fig, alt: str, caption: str = "", dpi: int = 100) -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt=\"{esc(alt)}\" src=\"{figure_data_uri(fig, dpi)}\">{cap}</figure>"


# ------------------------------------------------------------------ pieces shared by the pages
def loading_notes(model: dict) -> str:
    """The notices a page shows above everything else about how the model was loaded: that the
    checkpoint's own modeling code was executed (--trust-remote-code), and where its tokenizer came
    from."""
    parts = []
    if model.get("modeling_code") == "checkpoint":
        remote = model.get("remote_code") or {}
        parts.append(f"<div class=\"note\" id=\"remote-code\"><b>Modeling code from the checkpoint was "
                     f"executed</b> (--trust-remote-code): {esc(remote.get('class', ''))} from "
                     f"{esc(', '.join(remote.get('files') or []) or 'the checkpoint')}; time input "
                     f"{esc(model.get('time_input', ''))} ({esc(remote.get('time_input_from', ''))}), schedule from "
                     f"{esc(remote.get('schedule_from', ''))}.</div>")
    if model.get("tokenizer_source"):
        parts.append(f"<p class=\"rule\" id=\"tokenizer\">tokenizer: {esc(model['tokenizer_source'])}</p>")
    return "".join(parts)


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


def local_decoder(summary: dict) -> Callable[[list[int]], str] | None:
    """A decoder from the tokenizer the scan used, when it can be read again from local files: the
    file, folder or hub-cache snapshot its provenance names (`model.tokenizer`), else the
    checkpoint directory's tokenizer.json. Nothing is executed (no tokenizer code is trusted)."""
    model = summary.get("model") or (summary.get("provenance") or {}).get("model") or {}
    ckpt = model.get("checkpoint") or summary.get("checkpoint")
    record = model.get("tokenizer") if isinstance(model.get("tokenizer"), dict) else {}
    if not model.get("has_tokenizer", True):
        return None
    try:
        if record.get("kind") in ("file", "folder", "hub") and record.get("path"):
            from ..adapters.tokenizer_sources import load_named

            tok, _ = load_named(str(record["path"]), trust_remote_code=False)
        elif ckpt:
            from ..adapters.native import saved_tokenizer

            tok = saved_tokenizer(Path(str(ckpt)))
        else:
            return None
    except Exception:  # noqa: BLE001 - the report falls back to token ids
        return None
    if tok is None:
        return None
    if model.get("vocab_size") and tok.get_vocab_size(with_added_tokens=True) > int(model["vocab_size"]):
        return None
    return lambda ids: tok.decode(ids, skip_special_tokens=False)


def visible(piece: str) -> str:
    return piece.replace("\r", "␍").replace("\t", "⇥").replace("\n", "⏎\n")


def flatten(prefix: str, value, out: list):
    if isinstance(value, dict):
        for k in sorted(value):
            flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        out.append((prefix, ", ".join(str(v) for v in value) if value else "(none)"))
    else:
        out.append((prefix, json.dumps(value, sort_keys=True) if isinstance(value, list) else value))
