"""The built-in text sources (:data:`BUILTIN_TEXT_SOURCES`), as lists of documents in a fixed order.

``"docs"`` the ``pydoc_data`` help topics; ``"stdlib"`` the standard library's docstrings;
``"code"`` a fixed selection of its .py files; ``"templates"`` and ``"records"`` are generated
(:mod:`memaudit.data.generators`). :func:`builtin_documents` returns the documents of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from pathlib import Path

from .cache import Cache, short_hash
from .errors import DataError
from .generators import records_documents, templates_documents

# Built-in text sources (documents -> local byte-level BPE -> fixed blocks).
BUILTIN_TEXT_SOURCES = ("docs", "stdlib", "templates", "records", "code")

# Bump when the stdlib docstring extraction changes, so stale caches are not reused.
_STDLIB_EXTRACT_VERSION = 1
_STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "__pycache__"})


def builtin_documents(kind: str, seed: int, cache: Cache | None) -> list[str]:
    """The documents of the built-in source ``kind``; ``seed`` seeds the generated ones, ``cache``
    (None: no disk cache) holds the extracted stdlib text."""
    if kind == "docs":
        return docs_documents()
    if kind == "stdlib":
        return stdlib_documents(cache)
    if kind == "templates":
        return templates_documents(seed)
    if kind == "records":
        return records_documents(seed)
    if kind == "code":
        return code_documents(cache)
    raise DataError(f"Unknown built-in text source {kind!r}; expected "
                    f"{', '.join(repr(k) for k in BUILTIN_TEXT_SOURCES)}.")


def docs_documents() -> list[str]:
    from pydoc_data.topics import topics  # ships with CPython

    return [topics[k] for k in sorted(topics) if topics[k].strip()]


def _extract_stdlib_docstrings(root: Path) -> list[str]:
    """Module/class/function docstrings of every parseable stdlib .py file, in sorted walk
    order, exact repeats removed (first occurrence kept)."""
    import ast

    seen: set[str] = set()
    documents: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorting in place fixes the traversal order, so the corpus is identical across machines.
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP_DIRS)
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escapes
                    tree = ast.parse(Path(dirpath, filename).read_bytes())
            except (SyntaxError, ValueError, OSError, RecursionError):
                continue  # e.g. lib2to3 fixtures written for Python 2
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and doc.strip() and doc not in seen:
                        seen.add(doc)
                        documents.append(doc)
    return documents


def stdlib_documents(cache: Cache | None) -> list[str]:
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    settings = {"extract_version": _STDLIB_EXTRACT_VERSION, "root": str(root),
                "skip": sorted(_STDLIB_SKIP_DIRS)}
    settings_hash = short_hash(json.dumps(settings, sort_keys=True))
    key = f"stdlib-py{platform.python_version()}-{settings_hash}"
    if cache is not None:
        cached = cache.read_json(f"{key}.json")
        if isinstance(cached, list) and all(isinstance(d, str) for d in cached):
            return cached
    if not root.is_dir():
        raise DataError(f"The Python standard library directory {root} does not exist.")
    documents = _extract_stdlib_docstrings(root)
    if not documents:
        raise DataError(f"No docstrings were found under the standard library directory {root}.")
    if cache is not None:
        cache.write_json(f"{key}.json", documents)
    return documents


# Python source of the standard library: a deterministic selection of whole files.
_CODE_TARGET_BYTES = 2_500_000
_CODE_MAX_FILE_BYTES = 100_000
# Besides the test directories: generated tables (encodings), prose in a string (pydoc_data).
_CODE_SKIP_DIRS = _STDLIB_SKIP_DIRS | {"encodings", "pydoc_data", "turtledemo"}


def code_documents(cache: Cache | None) -> list[str]:
    """Whole .py files of the standard library (test directories, generated tables and files over
    ``_CODE_MAX_FILE_BYTES`` left out), taken in the order of the SHA-256 of their relative path
    until ``_CODE_TARGET_BYTES`` are reached: a fixed, spread-out selection of modules."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"The Python standard library directory {root} does not exist.")
    candidates: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _CODE_SKIP_DIRS)
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith(("test_", "_sysconfigdata")):
                continue
            path = Path(dirpath, filename)
            rel = path.relative_to(root).as_posix()
            candidates.append((hashlib.sha256(rel.encode("utf-8")).hexdigest(), path))
    documents: list[str] = []
    total = 0
    for _, path in sorted(candidates):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data.strip() or len(data) > _CODE_MAX_FILE_BYTES:
            continue
        try:
            text = data.decode("utf-8").replace("\r\n", "\n").strip()
        except UnicodeDecodeError:
            continue
        documents.append(text)
        total += len(data)
        if total >= _CODE_TARGET_BYTES:
            break
    if not documents:
        raise DataError(f"No Python source files were found under {root}.")
    return documents
