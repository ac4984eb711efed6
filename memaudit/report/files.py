"""The report files of a scan, rendered and written as one set.

    REPORT_FILES                                 name → render(result) -> bytes
    render_report(result, names=None)            {name: bytes}, nothing written
    write_report(result, out_dir, names=None)    renders and writes them (memaudit.io.write_file_set)
    write_recovery_report(result, out_dir)       recovery.parquet + summary.json of `memaudit recover`
    write_files(out_dir, {name: bytes})          any set of files into one directory, all or nothing

A new format adds one render function to REPORT_FILES or passes its own mapping to write_files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..io import write_file_set
from .tables import json_bytes, parquet_bytes, samples_table, summary_document, tokens_table


def html_bytes(result) -> bytes:
    """report.html, rendered from the same tables as the files beside it."""
    from .scan_page import render_scan_html

    return render_scan_html(result, decode=getattr(result, "decode", None))


REPORT_FILES: dict[str, Callable[[object], bytes]] = {
    "samples.parquet": lambda r: parquet_bytes(samples_table(r)),
    "tokens.parquet": lambda r: parquet_bytes(tokens_table(r)),
    "summary.json": lambda r: json_bytes(summary_document(r)),
    "report.html": html_bytes,
}


def write_files(out_dir: str | Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write every file into out_dir as one set (memaudit.io.write_file_set): after any failure,
    or a kill at any point, the files are all from the previous run or all from this one."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a directory")
    write_file_set({out_dir / name: data for name, data in files.items()})
    return {name: out_dir / name for name in files}


def file_manifest(files: dict[str, bytes]) -> dict:
    """summary.json's `report_files`: the SHA-256 and size of each Parquet file beside it
    (what `memaudit verify` checks the files against)."""
    return {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in sorted(files.items()) if name.endswith(".parquet")}


def render_report(result, names: list[str] | None = None) -> dict[str, bytes]:
    """The report files (all of REPORT_FILES, or the named ones) as bytes, nothing written.
    summary.json is rendered after the Parquet files and records their hashes (`report_files`)."""
    chosen = REPORT_FILES if names is None else {n: REPORT_FILES[n] for n in names}
    files = {name: render(result) for name, render in chosen.items() if name != "summary.json"}
    if "summary.json" in chosen:
        doc = json.loads(chosen["summary.json"](result))
        files["summary.json"] = json_bytes({**doc, "report_files": file_manifest(files)})
    return {name: files[name] for name in chosen}


def write_report(result, out_dir: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Render and write the report files (all of REPORT_FILES, or the named ones) as one set."""
    return write_files(out_dir, render_report(result, names))


def recovery_files(result) -> dict[str, bytes]:
    """The files of `memaudit recover --out`: recovery.parquet and summary.json."""
    from ..io import finite_json

    table = {"recovery.parquet": parquet_bytes(result.table())}
    doc = {**result.summary(include_timings=False), "provenance": finite_json(result.provenance()),
           "report_files": file_manifest(table)}
    return {**table, "summary.json": json_bytes(doc)}


def write_recovery_report(result, out_dir: str | Path) -> dict[str, Path]:
    """Write a RecoveryResult's files into out_dir as one set."""
    return write_files(out_dir, recovery_files(result))
