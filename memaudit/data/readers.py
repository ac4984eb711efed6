"""User corpus files: ``.txt`` (documents separated by blank lines), ``.jsonl`` (a string field
``"text"`` per line) and ``.parquet`` (a string column ``"text"``).

:func:`resolve_user_file` checks a path and :func:`read_user_file` returns its documents;
:func:`file_sha256` is the hash a corpus spec records. Every bad file raises :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .errors import DataError
from .sources import BUILTIN_TEXT_SOURCES

_FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")


def resolve_user_file(source: str) -> Path:
    """The absolute path of the corpus file ``source`` (.txt, .jsonl or .parquet); DataError when
    it is of another type, missing, or not a regular file."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        if path.exists():
            raise DataError(f"Unsupported corpus file type {path.suffix or '(none)'!r} for "
                            f"{path}; use .txt, .jsonl or .parquet.")
        raise DataError(f"Unknown corpus source {source!r}: expected 'synthetic', "
                        f"{', '.join(repr(k) for k in BUILTIN_TEXT_SOURCES)}, or a path to a "
                        ".txt, .jsonl or .parquet file.")
    if not path.exists():
        raise DataError(f"Corpus file not found: {path}.")
    if not path.is_file():
        raise DataError(f"Corpus path {path} is not a regular file.")
    check_not_sparse(path)
    return path.resolve()


SPARSE_MIN_BYTES = 64 << 20   # smaller files are read whatever they hold


def check_not_sparse(path: Path) -> None:
    """DataError for a large file that is mostly holes (a sparse file: st_size says gigabytes, the
    disk holds nothing). Its holes read as NUL bytes, which are neither text nor token data, and
    reading them would allocate the whole size. Found with SEEK_DATA / SEEK_HOLE, which only
    report holes that really exist (a compressed file system's files have none); where the file
    system cannot tell, nothing is refused."""
    import os

    try:
        size = path.stat().st_size
        if size < SPARSE_MIN_BYTES or not hasattr(os, "SEEK_HOLE"):
            return
        data, pos = 0, 0
        with open(path, "rb") as f:
            fd = f.fileno()
            for _ in range(100_000):   # extents visited; a file with more is treated as dense
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:        # ENXIO: no data after pos
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                data, pos = data + end - start, end
                if pos >= size:
                    break
            else:
                return
    except OSError:
        return
    if data * 2 < size:
        raise DataError(f"{path} is a sparse file: {size:,} bytes, of which only {data:,} are stored "
                        f"(the rest are holes, read as NUL bytes); refusing to read it as data.")


def read_user_file(path: Path) -> list[str]:
    """The non-empty documents of a corpus file, in file order; DataError when it cannot be read
    or holds no text."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            documents = _read_txt(path)
        elif suffix == ".jsonl":
            documents = _read_jsonl(path)
        else:
            documents = _read_parquet(path)
    except OSError as exc:
        raise DataError(f"Could not read corpus file {path}: {exc.strerror or exc}.") from None
    if not documents:
        raise DataError(f"Corpus file {path} contains no text.")
    return documents


def _read_txt(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"Corpus file {path} is not valid UTF-8 text (byte {exc.start}).") from None
    text = text.replace("\r\n", "\n")
    # Documents are separated by blank lines (two or more newlines, whitespace-only lines count).
    parts = re.split(r"\n[ \t\f\v\r]*\n\s*", text)
    return [p.strip() for p in parts if p.strip()]


def _read_jsonl(path: Path) -> list[str]:
    documents: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"Corpus file {path} is not valid UTF-8 text (byte {exc.start}).") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"Line {lineno} of {path} is not valid JSON ({exc.msg}).") from None
        if not isinstance(record, dict) or "text" not in record:
            raise DataError(f"Line {lineno} of {path} has no \"text\" field.")
        text = record["text"]
        if not isinstance(text, str):
            raise DataError(f"The \"text\" field on line {lineno} of {path} is not a string.")
        if text.strip():
            documents.append(text)
    return documents


def _read_parquet(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError):
        raise DataError(f"Corpus file {path} is not a readable Parquet file.") from None
    if "text" not in schema.names:
        raise DataError(f"Parquet file {path} has no \"text\" column "
                        f"(columns: {', '.join(schema.names) or 'none'}).")
    field_type = schema.field("text").type
    if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type)):
        raise DataError(f"The \"text\" column of {path} has type {field_type}, not string.")
    try:
        column = pq.read_table(path, columns=["text"]).column("text")
    except (pa.ArrowException, OSError, ValueError):
        raise DataError(f"Corpus file {path} is not a readable Parquet file.") from None
    return [t for t in column.to_pylist() if t is not None and t.strip()]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"Could not read corpus file {path}: {exc.strerror or exc}.") from None
    return h.hexdigest()
