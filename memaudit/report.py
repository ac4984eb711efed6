"""Report files of a scan: samples.parquet, tokens.parquet, summary.json.

Composable pieces:

    samples_table(result) / tokens_table(result)   → pyarrow.Table (with the provenance metadata)
    parquet_bytes(table) / json_bytes(document)     → bytes, deterministic
    REPORT_FILES                                    name → render(result) -> bytes (report.html
                                                    comes from memaudit.html_report)
    write_files(out_dir, {name: bytes})             all-or-nothing, atomic per file
    write_report(result, out_dir, names=None)       renders REPORT_FILES (or the named subset)

A new format (HTML, plots) adds one render function to REPORT_FILES or passes its own mapping to
write_files. Nothing written here holds a timestamp or a temporary path, so the same checkpoint,
settings and seed give byte-identical files.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .io import FILE_MODE as _FILE_MODE  # noqa: F401 - kept for importers
from .io import json_bytes as io_json_bytes
from .io import json_text
from .io import write_file_set

METADATA_KEY = b"memaudit"


def provenance_metadata(result) -> dict[bytes, bytes]:
    blob = json_text(result.provenance(), compact=True, ensure_ascii=True)
    return {METADATA_KEY: blob.encode()}


def samples_table(result) -> pa.Table:
    """One row per sample: id, token ids, decoded text, per-sample entropy summaries, flags."""
    n = result.n_samples
    tokens = np.ascontiguousarray(result.tokens, dtype=np.int32)
    token_ids = pa.ListArray.from_arrays(pa.array(np.arange(0, tokens.size + 1, tokens.shape[1], dtype=np.int32)),
                                         pa.array(tokens.reshape(-1)))
    dup_of = result.duplicate_of
    schema = pa.schema([
        pa.field("sample_id", pa.int32(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("text", pa.string()),
        pa.field("mean_entropy", pa.float32(), nullable=False),
        pa.field("low_entropy_fraction", pa.float32(), nullable=False),
        pa.field("mean_top1_prob", pa.float32(), nullable=False),
        pa.field("is_duplicate", pa.bool_(), nullable=False),
        pa.field("duplicate_of", pa.int32()),
        pa.field("is_fixed_point", pa.bool_(), nullable=False),
        pa.field("fixed_point_distance", pa.float32(), nullable=False),
    ], metadata=provenance_metadata(result))
    columns = [
        pa.array(np.arange(n, dtype=np.int32)),
        token_ids,
        pa.array(list(result.texts), type=pa.string()),
        pa.array(result.sample_mean_entropy.astype(np.float32)),
        pa.array(result.sample_low_entropy_fraction.astype(np.float32)),
        pa.array(result.top1_prob[0].mean(axis=1, dtype=np.float64).astype(np.float32)),
        pa.array(np.asarray(result.is_duplicate, dtype=bool)),
        pa.array([int(d) if d >= 0 else None for d in dup_of], type=pa.int32()),
        pa.array(np.asarray(result.is_fixed_point, dtype=bool)),
        pa.array(np.asarray(result.fixed_point_distance, dtype=np.float32)),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def tokens_table(result) -> pa.Table:
    """One row per sample × position (× evaluation time when a profile was requested)."""
    n_t, n, length = result.entropy.shape
    profiled = n_t > 1
    sample_id = np.repeat(np.arange(n, dtype=np.int32), length)
    position = np.tile(np.arange(length, dtype=np.int32), n)
    token_id = np.ascontiguousarray(result.tokens, dtype=np.int32).reshape(-1)
    fields = [pa.field("sample_id", pa.int32(), nullable=False), pa.field("position", pa.int32(), nullable=False),
              pa.field("token_id", pa.int32(), nullable=False)]
    if profiled:
        fields.append(pa.field("t_eval", pa.float64(), nullable=False))
    fields += [pa.field("entropy", pa.float32(), nullable=False), pa.field("top1_prob", pa.float32(), nullable=False)]
    schema = pa.schema(fields, metadata=provenance_metadata(result))
    columns = [np.tile(sample_id, n_t), np.tile(position, n_t), np.tile(token_id, n_t)]
    if profiled:
        columns.append(np.repeat(np.asarray(result.t_values, dtype=np.float64), n * length))
    columns += [np.ascontiguousarray(result.entropy, dtype=np.float32).reshape(-1),
                np.ascontiguousarray(result.top1_prob, dtype=np.float32).reshape(-1)]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=False, write_statistics=True)
    return sink.getvalue()


def json_bytes(document: dict) -> bytes:
    return io_json_bytes(document)


def summary_document(result) -> dict:
    return {**result.summary(include_timings=False), "provenance": result.provenance()}


def html_bytes(result) -> bytes:
    """report.html (memaudit.html_report), rendered from the same tables as the files beside it."""
    from .html_report import render_scan_html

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


def render_report(result, names: list[str] | None = None) -> dict[str, bytes]:
    """The report files (all of REPORT_FILES, or the named ones) as bytes, nothing written."""
    chosen = REPORT_FILES if names is None else {n: REPORT_FILES[n] for n in names}
    return {name: render(result) for name, render in chosen.items()}


def write_report(result, out_dir: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Render and write the report files (all of REPORT_FILES, or the named ones) as one set."""
    return write_files(out_dir, render_report(result, names))


def read_metadata(path: str | Path) -> dict:
    """The provenance blob of a report's Parquet file."""
    schema = pq.read_schema(path)
    return json.loads(schema.metadata[METADATA_KEY])


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fmt_ci(ci, pattern: str = "{:.4f}") -> str:
    """"[lo, hi]" for tables."""
    lo, hi = ci
    return "[" + pattern.format(lo) + ", " + pattern.format(hi) + "]"
