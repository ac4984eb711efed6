"""Corpora: :class:`Corpus` (fixed-length blocks, a nested train pool, a disjoint test pool),
:func:`load_corpus` and :func:`corpus_from_spec`, and the two builders (synthetic, text).

The text builder: documents (:mod:`~memaudit.data.sources` or :mod:`~memaudit.data.readers`)
-> byte-level BPE (:mod:`~memaudit.data.tokenizer`, cached by :mod:`~memaudit.data.cache`) ->
one token stream cut into blocks -> a seeded permutation split into train and test pools.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import platform
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tokenizers import Tokenizer

from .cache import Cache, cached_ids, cached_tokenizer
from .errors import DataError, check_int
from .readers import file_sha256, read_user_file, resolve_user_file
from .sources import BUILTIN_TEXT_SOURCES, builtin_documents
from .synthetic import (DEFAULT_N_SUCCESSORS, DEFAULT_SYNTHETIC_SEQ_LEN, DEFAULT_SYNTHETIC_VOCAB,
                        MarkovSource)
from .tokenizer import DEFAULT_TEXT_VOCAB, EOS_TOKEN, bytes_to_unicode

SPEC_FORMAT = 1  # bump when a change would make an old spec rebuild different blocks
DEFAULT_TEXT_SEQ_LEN = 64
MAX_TEST_POOL = 1024


class Corpus:
    """Fixed-length token blocks with a nested train pool and a disjoint test pool.

    Build with :func:`load_corpus` or :func:`corpus_from_spec`, not directly.
    """

    def __init__(self, *, name: str, seq_len: int, vocab_size: int, spec: dict,
                 tokenizer: Tokenizer | None = None, source: MarkovSource | None = None,
                 train_pool: np.ndarray | None = None, test_pool: np.ndarray | None = None
                 ) -> None:
        self.name = name
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self.spec = spec
        self.source = source
        self._train_pool = train_pool
        self._test_pool = test_pool
        if source is None and (train_pool is None or test_pool is None):
            raise ValueError("a text Corpus needs both a train pool and a test pool")
        self.max_train: int | None = None if source is not None else len(train_pool)
        self.max_test: int | None = None if source is not None else len(test_pool)
        self._eos_id = tokenizer.token_to_id(EOS_TOKEN) if tokenizer is not None else None
        self._byte_decoder: dict[str, int] | None = None

    def __repr__(self) -> str:
        return (f"Corpus(name={self.name!r}, seq_len={self.seq_len}, vocab_size={self.vocab_size}, "
                f"max_train={self.max_train}, max_test={self.max_test})")

    def train_blocks(self, n: int) -> torch.Tensor:
        """The first ``n`` training blocks, int64 [n, L]; nested across ``n``."""
        n = check_int(n, "n", minimum=0)
        if self.source is not None:
            return torch.from_numpy(self.source.sample("train", n, self.seq_len))
        if n > self.max_train:
            raise DataError(
                f"Requested {n} training blocks but corpus {self.name!r} has only "
                f"{self.max_train} (seq_len={self.seq_len}); use a smaller n, a shorter seq_len, "
                "or more text.")
        return torch.from_numpy(self._train_pool[:n].copy())  # copy: callers may mutate it

    def test_blocks(self, n: int) -> torch.Tensor:
        """``n`` held-out blocks, int64 [n, L], none equal to a training block."""
        n = check_int(n, "n", minimum=0)
        if self.source is not None:
            return torch.from_numpy(self.source.held_out(n, self.seq_len))
        if n > 0 and self.max_test == 0:
            raise DataError(
                f"Corpus {self.name!r} has no held-out blocks: every candidate test block also "
                "occurs in the training pool (the text is too repetitive).")
        if n > self.max_test:
            raise DataError(
                f"Requested {n} test blocks but corpus {self.name!r} has only {self.max_test} "
                f"held-out blocks (seq_len={self.seq_len}).")
        return torch.from_numpy(self._test_pool[:n].copy())

    # -- display -------------------------------------------------------------------------------

    def decode(self, ids: Any) -> str:
        """Text of a 1-D sequence of ids (synthetic: space-separated symbols ``"a17 a3 ..."``)."""
        seq = _as_id_list(ids)
        if self.tokenizer is None:
            return " ".join(f"a{i}" for i in seq)
        return self.tokenizer.decode(seq, skip_special_tokens=False)

    def token_strings(self, ids: Any) -> list[str]:
        """One display string per token. For byte-level text their concatenation equals
        ``decode(ids)``: a character split across tokens is shown on the token that completes it
        (earlier tokens get ``""``), and invalid bytes become U+FFFD."""
        seq = _as_id_list(ids)
        if self.tokenizer is None:
            return [f"a{i}" for i in seq]
        if self._byte_decoder is None:
            self._byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out: list[str] = []
        for i in seq:
            piece = self.tokenizer.id_to_token(i)
            if piece is None:
                out.append("")
                continue
            if i == self._eos_id or any(c not in self._byte_decoder for c in piece):
                # Special tokens are emitted verbatim by the decoder; flush pending bytes first.
                out.append(decoder.decode(b"", final=True) + piece)
                decoder.reset()
                continue
            out.append(decoder.decode(bytes(self._byte_decoder[c] for c in piece)))
        if out:
            out[-1] += decoder.decode(b"", final=True)
        return out


def load_corpus(source: str = "synthetic", seq_len: int | None = None, seed: int = 0,
                vocab_size: int | None = None, cache_dir: str | Path | None = None) -> Corpus:
    """Load a corpus: ``"synthetic"``, a built-in text source (``BUILTIN_TEXT_SOURCES``) or a
    .txt/.jsonl/.parquet path.

    ``vocab_size`` is the chain's vocabulary for synthetic data and the BPE target size for text
    (the final tokenizer may be smaller on tiny texts, and never smaller than 257: 256 bytes plus
    ``<|eos|>``; ``corpus.vocab_size`` is the actual size).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"The corpus source must be a name or a file path, got {source!r}.")
    source = os.fspath(source)
    if source == "synthetic":
        spec = {"format": SPEC_FORMAT, "source": "synthetic",
                "seq_len": seq_len if seq_len is not None else DEFAULT_SYNTHETIC_SEQ_LEN,
                "seed": seed,
                "vocab_size": vocab_size if vocab_size is not None else DEFAULT_SYNTHETIC_VOCAB,
                "n_successors": DEFAULT_N_SUCCESSORS}
        return _build_synthetic(spec)
    spec = {"format": SPEC_FORMAT,
            "seq_len": seq_len if seq_len is not None else DEFAULT_TEXT_SEQ_LEN,
            "seed": seed,
            "vocab_size": vocab_size if vocab_size is not None else DEFAULT_TEXT_VOCAB}
    if source in BUILTIN_TEXT_SOURCES:
        spec["source"] = source
    else:
        path = resolve_user_file(source)
        spec.update(source="file", path=str(path), sha256=file_sha256(path))
    return _build_text(spec, tokenizer=None, cache_dir=cache_dir, check_text_hash=False)


def corpus_from_spec(spec: dict, tokenizer: Tokenizer | None = None,
                     cache_dir: str | Path | None = None) -> Corpus:
    """Rebuild the corpus described by ``corpus.spec``.

    If ``tokenizer`` is given (e.g. loaded from a checkpoint's tokenizer.json) it is used for
    encoding instead of retraining one. Raises DataError if the underlying text changed (user file
    edited, different Python's stdlib), since the blocks would then differ.
    """
    if not isinstance(spec, dict):
        raise DataError(f"A corpus spec must be a dict, got {type(spec).__name__}.")
    fmt = spec.get("format", SPEC_FORMAT)
    if fmt != SPEC_FORMAT:
        raise DataError(f"Corpus spec format {fmt!r} is not supported (expected {SPEC_FORMAT}).")
    missing = [k for k in ("source", "seq_len", "seed", "vocab_size") if k not in spec]
    if missing:
        raise DataError(f"The corpus spec is missing the field(s) {', '.join(missing)}.")
    kind = spec["source"]
    if kind == "synthetic":
        return _build_synthetic(dict(spec))
    if kind in BUILTIN_TEXT_SOURCES:
        return _build_text(dict(spec), tokenizer=tokenizer, cache_dir=cache_dir,
                           check_text_hash=True)
    if kind == "file":
        if "path" not in spec:
            raise DataError("The corpus spec for a file source has no 'path' field.")
        path = resolve_user_file(spec["path"])
        digest = file_sha256(path)
        if spec.get("sha256") not in (None, digest):
            raise DataError(f"The file {path} has changed since the corpus spec was recorded "
                            "(its SHA-256 differs), so its blocks cannot be rebuilt exactly.")
        return _build_text(dict(spec, path=str(path), sha256=digest), tokenizer=tokenizer,
                           cache_dir=cache_dir, check_text_hash=True)
    raise DataError(f"Unknown corpus source {kind!r} in spec; expected 'synthetic', "
                    f"{', '.join(repr(k) for k in BUILTIN_TEXT_SOURCES)} or 'file'.")


def _build_synthetic(spec: dict) -> Corpus:
    seq_len = check_int(spec["seq_len"], "seq_len", minimum=1)
    source = MarkovSource(vocab_size=spec["vocab_size"],
                          n_successors=spec.get("n_successors", DEFAULT_N_SUCCESSORS),
                          seed=spec["seed"])
    spec = {"format": SPEC_FORMAT, "source": "synthetic", "seq_len": seq_len,
            "seed": source.seed, "vocab_size": source.vocab_size,
            "n_successors": source.n_successors}
    return Corpus(name="synthetic", seq_len=seq_len, vocab_size=source.vocab_size, spec=spec,
                  source=source)


def _build_text(spec: dict, tokenizer: Tokenizer | None, cache_dir: str | Path | None,
                check_text_hash: bool) -> Corpus:
    seq_len = check_int(spec["seq_len"], "seq_len", minimum=1)
    seed = check_int(spec["seed"], "seed", minimum=0)
    vocab_size = check_int(spec["vocab_size"], "vocab_size", minimum=1)
    kind = spec["source"]
    # Only sources that are slow to prepare use the disk cache; "docs" is rebuilt in well under a
    # second and so never touches the file system.
    cache = Cache(cache_dir) if kind != "docs" else None

    if kind in BUILTIN_TEXT_SOURCES:
        documents, name = builtin_documents(kind, seed, cache), kind
    else:
        path = Path(spec["path"])
        documents, name = read_user_file(path), str(path)
    text_sha = _documents_sha256(documents)
    if check_text_hash and spec.get("text_sha256") not in (None, text_sha):
        raise DataError(
            f"The text of corpus {name!r} differs from the one recorded in the spec (for "
            f"built-in sources this usually means a different Python version: spec made with "
            f"{spec.get('python', 'unknown')}, this is {platform.python_version()}), so its "
            "blocks cannot be rebuilt exactly.")

    if tokenizer is None:
        tokenizer = cached_tokenizer(cache, documents, text_sha, vocab_size)
    elif not isinstance(tokenizer, Tokenizer):
        raise DataError(f"Expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}.")
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise DataError(
            f"The tokenizer has no {EOS_TOKEN} token, so documents cannot be separated.")
    actual_vocab = tokenizer.get_vocab_size()
    if check_text_hash and spec.get("tokenizer_vocab_size") not in (None, actual_vocab):
        raise DataError(
            f"The tokenizer has {actual_vocab} tokens but the corpus spec was built with "
            f"{spec['tokenizer_vocab_size']}; it is not the tokenizer of this corpus.")

    stream = cached_ids(cache, documents, text_sha, tokenizer, eos_id)
    num_blocks = len(stream) // seq_len
    if num_blocks < 2:
        raise DataError(
            f"Corpus {name!r} has {len(stream)} tokens, too few for one training and one test "
            f"block of seq_len={seq_len}; provide more text or a shorter seq_len.")
    blocks = stream[: num_blocks * seq_len].reshape(num_blocks, seq_len).astype(np.int64)
    order = np.random.default_rng(seed).permutation(num_blocks)
    n_test_pool = min(MAX_TEST_POOL, max(1, num_blocks // 10))
    train_pool = blocks[order[:-n_test_pool]]
    test_pool = blocks[order[-n_test_pool:]]
    # Repeated text can make two blocks identical; a held-out block that is also a training block
    # would fake "memorization" of unseen data, so drop it from the test pool.
    train_keys = {row.tobytes() for row in train_pool}
    keep = np.array([row.tobytes() not in train_keys for row in test_pool], dtype=bool)
    test_pool = test_pool[keep]  # may be empty for pathological text; test_blocks() explains

    full_spec = {"format": SPEC_FORMAT, "source": kind, "seq_len": seq_len, "seed": seed,
                 "vocab_size": vocab_size, "tokenizer_vocab_size": actual_vocab,
                 "text_sha256": text_sha, "python": platform.python_version()}
    if kind == "file":
        full_spec.update(path=spec["path"], sha256=spec["sha256"])
    return Corpus(name=name, seq_len=seq_len, vocab_size=actual_vocab, spec=full_spec,
                  tokenizer=tokenizer, train_pool=np.ascontiguousarray(train_pool),
                  test_pool=np.ascontiguousarray(test_pool))


def _as_id_list(ids: Any) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise DataError(f"Expected a 1-D sequence of token ids, got shape {arr.shape}.")
    return [int(i) for i in arr]


def _documents_sha256(documents: Iterable[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        data = doc.encode("utf-8")
        # Length-prefix each document so that document boundaries are part of the hash.
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()
