"""The on-disk cache of memaudit.data (``cache_dir``, default :func:`default_cache_dir`).

Slow steps are cached under ``<cache_dir>/data``: extracted stdlib/code text, trained tokenizers
(``tokenizer-<key>.json``) and encoded token streams (``ids-<key>.npy``). Keys are short SHA-256
hashes of everything the entry depends on (:func:`short_hash`), so a changed input never reuses
a stale entry. The cache is best effort: unreadable entries are recomputed, failed writes only
warn.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tokenizers import Tokenizer

from ..io import atomic_write_bytes
from .tokenizer import EOS_TOKEN, encode_documents, train_bpe_tokenizer


def default_cache_dir() -> Path:
    """``$MEMAUDIT_CACHE`` if set, else ``~/.cache/memaudit``."""
    env = os.environ.get("MEMAUDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memaudit"


def short_hash(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of ``text``: a cache key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Cache:
    """Best-effort file cache: unreadable entries are recomputed, failed writes are ignored
    (a read-only home directory must not break loading). Writes are atomic (memaudit.io.atomic_write_bytes)
    so a crash or a concurrent process never leaves a half-written entry."""

    def __init__(self, cache_dir: str | Path | None) -> None:
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.dir = root / "data"

    def _write(self, name: str, write: Callable[[Any], None], binary: bool) -> None:
        buffer = io.BytesIO() if binary else io.StringIO()
        write(buffer)
        data = buffer.getvalue() if binary else buffer.getvalue().encode("utf-8")
        try:
            atomic_write_bytes(self.dir / name, data)
        except OSError as exc:
            warnings.warn(f"memaudit: could not write cache file {self.dir / name}: {exc}",
                          RuntimeWarning, stacklevel=3)

    def read_json(self, name: str) -> Any:
        try:
            return json.loads((self.dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_json(self, name: str, obj: Any) -> None:
        self._write(name, lambda f: json.dump(obj, f, ensure_ascii=False), binary=False)

    def read_tokenizer(self, name: str) -> Tokenizer | None:
        try:
            return Tokenizer.from_file(str(self.dir / name))
        except Exception:  # missing or corrupt: the tokenizers library raises plain Exception
            return None

    def write_tokenizer(self, name: str, tok: Tokenizer) -> None:
        self._write(name, lambda f: f.write(tok.to_str()), binary=False)

    def read_array(self, name: str) -> np.ndarray | None:
        try:
            return np.load(self.dir / name, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def write_array(self, name: str, arr: np.ndarray) -> None:
        self._write(name, lambda f: np.save(f, arr, allow_pickle=False), binary=True)


def cached_tokenizer(cache: Cache | None, documents: list[str], text_sha: str,
                      vocab_size: int) -> Tokenizer:
    import tokenizers

    key = short_hash(json.dumps({"text": text_sha, "vocab_size": vocab_size,
                                  "tokenizers": tokenizers.__version__, "eos": EOS_TOKEN}))
    name = f"tokenizer-{key}.json"
    if cache is not None:
        tok = cache.read_tokenizer(name)
        if tok is not None:
            return tok
    tok = train_bpe_tokenizer(documents, vocab_size)
    if cache is not None:
        cache.write_tokenizer(name, tok)
    return tok


def cached_ids(cache: Cache | None, documents: list[str], text_sha: str, tokenizer: Tokenizer,
                eos_id: int) -> np.ndarray:
    """All documents encoded, each followed by ``eos_id``, concatenated (int32)."""
    key = short_hash(json.dumps({"text": text_sha,
                                  "tokenizer": short_hash(tokenizer.to_str())}))
    name = f"ids-{key}.npy"
    if cache is not None:
        ids = cache.read_array(name)
        if ids is not None and ids.ndim == 1:
            return ids
    ids = encode_documents(tokenizer, documents, eos_id)
    if cache is not None:
        cache.write_array(name, ids)
    return ids
