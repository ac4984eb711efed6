"""The report's tables and documents as deterministic bytes: samples.parquet (one row per sample),
tokens.parquet (one row per sample × position [× t]), summary.json, and the provenance blob every
Parquet file carries in its schema metadata. Nothing here holds a timestamp or a temporary path,
so the same checkpoint, settings and seed give byte-identical files."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io import json_bytes  # noqa: F401  (re-exported: report.json_bytes)
from ..io import json_text

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
        pa.field("basin_agreement", pa.float32(), nullable=False),
        pa.field("near_copies_earlier", pa.int32(), nullable=False),
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
        pa.array(np.asarray(result.basin_agreement, dtype=np.float32)),
        pa.array(np.asarray(result.near_copies_earlier, dtype=np.int32)),
    ]
    if getattr(result, "training", None) is not None:   # evidence with training data (scan --train)
        extra_fields, extra_columns = training_columns(result.training.matches)
        schema = pa.schema(list(schema) + extra_fields, metadata=schema.metadata)
        columns += extra_columns
    return pa.Table.from_arrays(columns, schema=schema)


def training_columns(m) -> tuple[list, list]:
    """samples.parquet's columns of the data evidence (memaudit.extraction.Matches)."""
    found = np.asarray(m.nearest_train_id) >= 0

    def nullable(values, kind):
        return pa.array(np.asarray(values), type=kind, mask=~found)

    fields = [pa.field("is_training_copy", pa.bool_(), nullable=False),
              pa.field("is_near_copy", pa.bool_(), nullable=False),
              pa.field("nearest_train_id", pa.int64()),
              pa.field("nearest_train_offset", pa.int32()),
              pa.field("nearest_train_distance", pa.int32()),
              pa.field("longest_train_span", pa.int32(), nullable=False),
              pa.field("nearest_train_token_ids", pa.list_(pa.int32()))]
    columns = [pa.array(np.asarray(m.is_training_copy, dtype=bool)), pa.array(np.asarray(m.is_near_copy, dtype=bool)),
               nullable(np.asarray(m.nearest_train_id, dtype=np.int64), pa.int64()),
               nullable(np.asarray(m.nearest_train_offset, dtype=np.int32), pa.int32()),
               nullable(np.asarray(m.nearest_train_distance, dtype=np.int32), pa.int32()),
               pa.array(np.asarray(m.longest_train_span, dtype=np.int32))]
    window = np.ascontiguousarray(m.nearest_train_tokens, dtype=np.int32)
    offsets = np.arange(0, window.size + 1, max(window.shape[1], 1), dtype=np.int32)[: window.shape[0] + 1]
    columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(window.reshape(-1)),
                                            mask=pa.array(~found)))
    return fields, columns


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


def summary_document(result) -> dict:
    return {**result.summary(include_timings=False), "provenance": result.provenance()}


def read_metadata(path: str | Path) -> dict:
    """The provenance blob of a report's Parquet file."""
    schema = pq.read_schema(path)
    return json.loads(schema.metadata[METADATA_KEY])
