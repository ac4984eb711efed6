"""Corpora for memaudit: fixed-length token blocks with nested training subsets.

Every corpus is a :class:`Corpus` of blocks of ``seq_len`` token ids in ``[0, vocab_size)``.
``train_blocks(n)`` returns the first ``n`` blocks of one fixed, seeded order, so training sets
of different sizes are *nested* (``train_blocks(100) == train_blocks(1000)[:100]``): the
memorization -> generalization sweep then varies only the amount of data, never its identity.
``test_blocks(n)`` returns held-out blocks that never exactly equal a training block.

Sources (``load_corpus(source, ...)``):

``"synthetic"`` (default)
    A seeded first-order Markov chain (:class:`MarkovSource`), default ``seq_len`` 32 and
    ``vocab_size`` 32. Its true conditional entropies are known exactly
    (:meth:`MarkovSource.conditional_entropy`), which makes it the reference for calibrating the
    data-free probe. The train pool is unlimited (``max_train is None``).
``"docs"``
    The English text of the ``pydoc_data.topics`` help topics (~0.47 MB, ships with CPython),
    one document per topic, topics in sorted order. Small: meant for fast tests.
``"stdlib"``
    The module/class/function docstrings of the standard library (~1.7 MB of English), exact
    repeats removed. Extraction takes a few seconds, so the text, the trained tokenizer and the
    token ids are cached under ``cache_dir`` (default ``$MEMAUDIT_CACHE`` or
    ``~/.cache/memaudit``).
a file path
    ``.txt``: documents are separated by blank lines (runs of two or more newlines, whitespace-
    only lines count as blank); each document is stripped. ``.jsonl``: one JSON object per line
    with a string field ``"text"`` (blank lines are skipped). ``.parquet``: a string column
    ``"text"`` (nulls are skipped). Tokenizer and ids are cached like ``"stdlib"``.

Separator convention: text documents are encoded one by one and each is followed by the
``<|eos|>`` token, the stream is concatenated and cut into non-overlapping blocks of ``seq_len``
(the tail is dropped), so a block may start or end in the middle of a document and may contain
several ``<|eos|>``. Synthetic sequences are whole, independent chains with no separator.

Text pipeline: a byte-level BPE tokenizer (``vocab_size`` default 512, plus ``<|eos|>``) is
trained locally on the documents in their fixed order; training is deterministic (identical
tokenizer JSON across runs and processes). All blocks are permuted with
``np.random.default_rng(seed)``; the last ``min(1024, max(1, num_blocks // 10))`` blocks of the
permutation are the test pool (minus any block identical to a train-pool block) and the rest,
in permutation order, is the train pool. ``max_train`` is the train pool size.

Reproducibility: ``corpus.spec`` is a JSON-serialisable dict from which
``corpus_from_spec(spec, tokenizer=None)`` rebuilds an identical corpus. For text corpora the spec
records the SHA-256 of the document text, so a rebuild on a different Python (whose stdlib text
differs) or from a changed file fails loudly instead of silently yielding different blocks.

Every bad input raises :class:`DataError` with one human-readable sentence.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import platform
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .errors import UsageError

__all__ = [
    "Corpus",
    "DataError",
    "MarkovSource",
    "corpus_from_spec",
    "default_cache_dir",
    "load_corpus",
    "train_bpe_tokenizer",
    "EOS_TOKEN",
]

EOS_TOKEN = "<|eos|>"
SPEC_FORMAT = 1  # bump when a change would make an old spec rebuild different blocks
# Bump when the stdlib docstring extraction changes, so stale caches are not reused.
_STDLIB_EXTRACT_VERSION = 1

DEFAULT_SYNTHETIC_SEQ_LEN = 32
DEFAULT_SYNTHETIC_VOCAB = 32
DEFAULT_N_SUCCESSORS = 8
DEFAULT_TEXT_SEQ_LEN = 64
DEFAULT_TEXT_VOCAB = 512
MAX_TEST_POOL = 1024

# Synthetic sequences are generated in fixed chunks so that sequence i depends only on
# (seed, split, i) and never on how many sequences were requested.
SYNTHETIC_CHUNK = 4096
# Synthetic test sequences are guaranteed to differ from the first this-many train sequences.
# It is a fixed constant (not "the largest n asked for so far") so that test_blocks() is the same
# in every process, whatever was requested before.
SYNTHETIC_DISJOINT_HORIZON = 65536

_SPLIT_IDS = {"train": 1, "test": 2}
_PARAM_STREAM = 0  # rng stream id of the chain parameters; must differ from every split id

_STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "__pycache__"})
_FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
# Built-in text sources (documents -> local byte-level BPE -> fixed blocks).
BUILTIN_TEXT_SOURCES = ("docs", "stdlib", "templates", "records", "code")


class DataError(UsageError):
    """A corpus could not be built from the given input (message: one human sentence)."""


# --------------------------------------------------------------------------------------------
# Synthetic source
# --------------------------------------------------------------------------------------------


class MarkovSource:
    """A seeded first-order Markov chain over ``vocab_size`` symbols.

    Every token has ``n_successors`` distinct successor tokens with Dirichlet(1) transition
    weights; the initial distribution is uniform. Sparse successors make sequences highly
    structured (so small models can learn the chain) while the conditional entropy of a token
    given its neighbours stays finite (so the chain is not trivially memorizable).
    """

    def __init__(self, vocab_size: int = DEFAULT_SYNTHETIC_VOCAB,
                 n_successors: int = DEFAULT_N_SUCCESSORS, seed: int = 0) -> None:
        vocab_size = _check_int(vocab_size, "vocab_size", minimum=2)
        n_successors = _check_int(n_successors, "n_successors", minimum=1)
        seed = _check_int(seed, "seed", minimum=0)
        if n_successors > vocab_size:
            raise DataError(
                f"n_successors ({n_successors}) cannot exceed vocab_size ({vocab_size}) "
                "for the synthetic Markov source.")
        self.vocab_size = vocab_size
        self.n_successors = n_successors
        self.seed = seed

        rng = np.random.default_rng([seed, _PARAM_STREAM, 0])
        # Distinct successors per token: the first K columns of a random permutation per row.
        self.successors: np.ndarray = np.argsort(
            rng.random((vocab_size, vocab_size)), axis=1, kind="stable")[:, :n_successors]
        self.successor_weights: np.ndarray = rng.dirichlet(np.ones(n_successors), size=vocab_size)
        self.initial: np.ndarray = np.full(vocab_size, 1.0 / vocab_size)
        transition = np.zeros((vocab_size, vocab_size))
        np.put_along_axis(transition, self.successors, self.successor_weights, axis=1)
        self.transition: np.ndarray = transition  # [V, V], row = current token, col = next
        # Cumulative weights for inverse-CDF sampling; the last entry is forced to exactly 1 so
        # that u in [0, 1) can never fall past it through rounding.
        cdf = np.cumsum(self.successor_weights, axis=1)
        cdf[:, -1] = 1.0
        self._cdf = cdf
        self._token_dtype = np.uint8 if vocab_size <= 256 else (
            np.uint16 if vocab_size <= 65536 else np.int64)
        self._train_keys: dict[int, set[bytes]] = {}  # seq_len -> row bytes of train prefix

    def __repr__(self) -> str:
        return (f"MarkovSource(vocab_size={self.vocab_size}, "
                f"n_successors={self.n_successors}, seed={self.seed})")

    # -- sampling ------------------------------------------------------------------------------

    def _chunk(self, split: str, chunk_index: int, seq_len: int) -> np.ndarray:
        """Chunk ``chunk_index`` (SYNTHETIC_CHUNK sequences) of ``split`` as int64 [chunk, L]."""
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[split], chunk_index])
        u = rng.random((SYNTHETIC_CHUNK, seq_len))
        out = np.empty((SYNTHETIC_CHUNK, seq_len), dtype=np.int64)
        out[:, 0] = np.minimum((u[:, 0] * self.vocab_size).astype(np.int64), self.vocab_size - 1)
        for j in range(1, seq_len):
            prev = out[:, j - 1]
            idx = (self._cdf[prev] <= u[:, j, None]).sum(axis=1)
            out[:, j] = self.successors[prev, idx]
        return out

    def sample(self, split: str, n: int, seq_len: int) -> np.ndarray:
        """The first ``n`` raw sequences of the ``split`` stream ("train" or "test"), int64."""
        if split not in _SPLIT_IDS:
            raise DataError(f"Unknown split {split!r}; expected 'train' or 'test'.")
        n_chunks = -(-n // SYNTHETIC_CHUNK)
        if n_chunks == 0:
            return np.empty((0, seq_len), dtype=np.int64)
        chunks = [self._chunk(split, c, seq_len) for c in range(n_chunks)]
        return np.concatenate(chunks)[:n]

    def _train_key_set(self, seq_len: int) -> set[bytes]:
        """Row bytes of the first SYNTHETIC_DISJOINT_HORIZON train sequences (lazy, cached)."""
        keys = self._train_keys.get(seq_len)
        if keys is None:
            rows = self.sample("train", SYNTHETIC_DISJOINT_HORIZON, seq_len)
            keys = {row.tobytes() for row in rows.astype(self._token_dtype)}
            self._train_keys[seq_len] = keys
        return keys

    def held_out(self, n: int, seq_len: int) -> np.ndarray:
        """The first ``n`` test-stream sequences that equal none of the first
        SYNTHETIC_DISJOINT_HORIZON train sequences (int64 [n, L])."""
        if n == 0:
            return np.empty((0, seq_len), dtype=np.int64)
        train_keys = self._train_key_set(seq_len)
        kept: list[np.ndarray] = []
        n_kept = 0
        chunk_index = 0
        # Tiny chains (few possible sequences) can have every test sequence inside the train
        # prefix; give up after a generous budget rather than loop forever.
        max_chunks = 16 + 4 * (-(-n // SYNTHETIC_CHUNK))
        while n_kept < n:
            if chunk_index >= max_chunks:
                raise DataError(
                    f"The synthetic chain ({self!r}, seq_len={seq_len}) is too small to provide "
                    f"{n} test sequences distinct from the training sequences "
                    f"(found {n_kept}).")
            chunk = self._chunk("test", chunk_index, seq_len)
            small = chunk.astype(self._token_dtype)
            mask = np.fromiter((row.tobytes() not in train_keys for row in small),
                               dtype=bool, count=len(small))
            kept.append(chunk[mask])
            n_kept += int(mask.sum())
            chunk_index += 1
        return np.concatenate(kept)[:n]

    # -- exact quantities ----------------------------------------------------------------------

    def _check_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        if not isinstance(blocks, torch.Tensor):
            blocks = torch.as_tensor(np.asarray(blocks))
        if blocks.dim() != 2:
            raise DataError(f"Expected blocks of shape [n, L], got shape {tuple(blocks.shape)}.")
        if blocks.dtype.is_floating_point or blocks.dtype.is_complex or blocks.dtype == torch.bool:
            raise DataError(f"Expected integer token ids, got dtype {blocks.dtype}.")
        blocks = blocks.long().cpu()
        if blocks.numel() and (int(blocks.min()) < 0 or int(blocks.max()) >= self.vocab_size):
            raise DataError(f"Token ids must lie in [0, {self.vocab_size}) for this chain.")
        return blocks

    def _log_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        with np.errstate(divide="ignore"):
            log_t = torch.from_numpy(np.log(self.transition))
            log_init = torch.from_numpy(np.log(self.initial))
        return log_t, log_init  # float64, -inf where impossible

    def log_prob(self, blocks: torch.Tensor) -> torch.Tensor:
        """Exact log-probability (nats) of each sequence under the chain: float64 [n].

        ``-inf`` for sequences the chain cannot produce."""
        x = self._check_blocks(blocks)
        log_t, log_init = self._log_params()
        if x.shape[1] == 0:
            return torch.zeros(x.shape[0], dtype=torch.float64)
        return log_init[x[:, 0]] + log_t[x[:, :-1], x[:, 1:]].sum(dim=1)

    def conditional_entropy(self, blocks: torch.Tensor) -> torch.Tensor:
        """True entropy (nats) of token i given all other tokens of its sequence: float32 [n, L].

        For a first-order chain p(x_i | rest) ∝ p(x_i | x_{i-1}) p(x_{i+1} | x_i), with the
        initial distribution in place of the left factor at i = 0 and no right factor at
        i = L - 1. The formula only involves the two neighbours (the Markov blanket), so it is
        also used when an impossible transition elsewhere makes p(rest) = 0 (e.g. in model
        samples). Only positions whose own neighbours admit no token at all (every candidate has
        probability zero) have no conditional distribution; they are NaN, so use
        ``torch.nanmean`` or mask them.
        """
        x = self._check_blocks(blocks)
        n, length = x.shape
        log_t, log_init = self._log_params()
        if length == 0:
            return torch.zeros((n, 0), dtype=torch.float32)
        if length == 1:
            return _entropy(log_init).float().expand(n, 1).clone()
        if self.vocab_size <= self._TABLE_MAX_VOCAB:
            # The entropy depends only on the two neighbours, so tabulate it once for every
            # neighbour pair (V^3 work) and gather: far cheaper than n * L * V for large n.
            first = _entropy(log_init[None, :] + log_t.T)                # [c]: x_1 = c
            last = _entropy(log_t)                                       # [a]: x_{L-2} = a
            mid = _entropy(log_t[:, None, :] + log_t.T[None, :, :])      # [a, c]
            out = torch.empty((n, length), dtype=torch.float64)
            out[:, 0] = first[x[:, 1]]
            out[:, -1] = last[x[:, -2]]
            out[:, 1:-1] = mid[x[:, :-2], x[:, 2:]]
            return out.float()
        # Large vocabularies: score every candidate directly, in row chunks to bound memory.
        out = torch.empty((n, length), dtype=torch.float32)
        rows = max(1, (1 << 22) // (length * self.vocab_size))
        for s in range(0, n, rows):
            xb = x[s:s + rows]
            b = xb.shape[0]
            # left[b, i, v] = log p(x_i = v | x_{i-1}); i = 0 uses the initial distribution.
            left = torch.cat([log_init.expand(b, 1, -1), log_t[xb[:, :-1]]], dim=1)
            # right[b, i, v] = log p(x_{i+1} | x_i = v); no factor at the last position.
            right = torch.cat([log_t.T[xb[:, 1:]],
                               torch.zeros(b, 1, self.vocab_size, dtype=log_t.dtype)], dim=1)
            out[s:s + rows] = _entropy(left + right).float()
        return out

    # Above this vocabulary size the V^3 neighbour table (float64, with temporaries) gets too
    # large in memory; score directly instead.
    _TABLE_MAX_VOCAB = 128


def _entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(scores) over the last dim; NaN where every score is -inf.

    Scores are float64 so tiny Dirichlet weights do not underflow to spurious zeros."""
    log_p = torch.log_softmax(scores, dim=-1)
    p = log_p.exp()
    # 0 - sum (not -sum) so that certain tokens give +0.0 rather than -0.0.
    ent = 0.0 - torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=-1)
    undefined = torch.isneginf(scores).all(dim=-1)
    return torch.where(undefined, torch.full_like(ent, float("nan")), ent)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


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
        n = _check_int(n, "n", minimum=0)
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
        n = _check_int(n, "n", minimum=0)
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
            self._byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
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


# --------------------------------------------------------------------------------------------
# Public constructors
# --------------------------------------------------------------------------------------------


def load_corpus(source: str = "synthetic", seq_len: int | None = None, seed: int = 0,
                vocab_size: int | None = None, cache_dir: str | Path | None = None) -> Corpus:
    """Load a corpus: ``"synthetic"``, ``"docs"``, ``"stdlib"`` or a .txt/.jsonl/.parquet path.

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
        path = _resolve_user_file(source)
        spec.update(source="file", path=str(path), sha256=_file_sha256(path))
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
        path = _resolve_user_file(spec["path"])
        digest = _file_sha256(path)
        if spec.get("sha256") not in (None, digest):
            raise DataError(f"The file {path} has changed since the corpus spec was recorded "
                            "(its SHA-256 differs), so its blocks cannot be rebuilt exactly.")
        return _build_text(dict(spec, path=str(path), sha256=digest), tokenizer=tokenizer,
                           cache_dir=cache_dir, check_text_hash=True)
    raise DataError(f"Unknown corpus source {kind!r} in spec; expected 'synthetic', "
                    f"{', '.join(repr(k) for k in BUILTIN_TEXT_SOURCES)} or 'file'.")


def default_cache_dir() -> Path:
    """``$MEMAUDIT_CACHE`` if set, else ``~/.cache/memaudit``."""
    env = os.environ.get("MEMAUDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memaudit"


def train_bpe_tokenizer(documents: Sequence[str],
                        vocab_size: int = DEFAULT_TEXT_VOCAB) -> Tokenizer:
    """Train a byte-level BPE tokenizer (with ``<|eos|>``) on ``documents`` in order.

    Deterministic: the trainer breaks count ties by pair order, and every byte already has a
    fixed id from the initial alphabet, so the result does not depend on thread count or hash
    seeds (checked by the tests, including across processes).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(documents, trainer=trainer, length=len(documents))
    return tok


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _build_synthetic(spec: dict) -> Corpus:
    seq_len = _check_int(spec["seq_len"], "seq_len", minimum=1)
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
    seq_len = _check_int(spec["seq_len"], "seq_len", minimum=1)
    seed = _check_int(spec["seed"], "seed", minimum=0)
    vocab_size = _check_int(spec["vocab_size"], "vocab_size", minimum=1)
    kind = spec["source"]
    # Only sources that are slow to prepare use the disk cache; "docs" is rebuilt in well under a
    # second and so never touches the file system.
    cache = _Cache(cache_dir) if kind != "docs" else None

    if kind == "docs":
        documents, name = _docs_documents(), "docs"
    elif kind == "stdlib":
        documents, name = _stdlib_documents(cache), "stdlib"
    elif kind == "templates":
        documents, name = _templates_documents(seed), "templates"
    elif kind == "records":
        documents, name = _records_documents(seed), "records"
    elif kind == "code":
        documents, name = _code_documents(cache), "code"
    else:
        path = Path(spec["path"])
        documents, name = _read_user_file(path), str(path)
    text_sha = _documents_sha256(documents)
    if check_text_hash and spec.get("text_sha256") not in (None, text_sha):
        raise DataError(
            f"The text of corpus {name!r} differs from the one recorded in the spec (for "
            f"built-in sources this usually means a different Python version: spec made with "
            f"{spec.get('python', 'unknown')}, this is {platform.python_version()}), so its "
            "blocks cannot be rebuilt exactly.")

    if tokenizer is None:
        tokenizer = _cached_tokenizer(cache, documents, text_sha, vocab_size)
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

    stream = _cached_ids(cache, documents, text_sha, tokenizer, eos_id)
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


# --------------------------------------------------------------------------------------------
# Text sources
# --------------------------------------------------------------------------------------------


def _docs_documents() -> list[str]:
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


def _stdlib_documents(cache: _Cache | None) -> list[str]:
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    settings = {"extract_version": _STDLIB_EXTRACT_VERSION, "root": str(root),
                "skip": sorted(_STDLIB_SKIP_DIRS)}
    settings_hash = _short_hash(json.dumps(settings, sort_keys=True))
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


# --------------------------------------------------------------------------------------------
# Generated and code sources (validation languages: low entropy, structured, code)
# --------------------------------------------------------------------------------------------


class _Draws:
    """Seeded uniform draws from Python's Mersenne Twister, used only through ``random()``
    (whose output for a given integer seed is stable across Python versions), so a generated
    corpus is identical on every machine and Python."""

    def __init__(self, kind: str, seed: int) -> None:
        import random

        digest = hashlib.sha256(f"memaudit-{kind}-{seed}".encode("utf-8")).digest()
        self._rng = random.Random(int.from_bytes(digest[:8], "little"))

    def below(self, n: int) -> int:
        return min(n - 1, int(self._rng.random() * n))

    def pick(self, items: Sequence[Any]) -> Any:
        return items[self.below(len(items))]

    def chance(self, p: float) -> bool:
        return self._rng.random() < p

    def between(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        return lo + self.below(hi - lo + 1)

    def weighted(self, items: Sequence[Any], weights: Sequence[float]) -> Any:
        u = self._rng.random() * sum(weights)
        for item, w in zip(items, weights):
            u -= w
            if u < 0:
                return item
        return items[-1]


# The template grammar. Every subject belongs to a kind; its verbs, adjectives and pronoun depend
# on the kind, and each verb selects the kind of its object, so most words are largely determined
# by their neighbours while the free choices (nouns, adjectives, places, times) give far more than
# 10^6 distinct sentences (``_template_sentence_count``).
_T_SUBJECTS = {
    "animal": ("cat", "dog", "fox", "horse", "rabbit", "owl", "goat", "mouse", "bear", "duck"),
    "person": ("farmer", "teacher", "doctor", "baker", "sailor", "pilot", "painter", "student",
               "miner", "singer"),
    "machine": ("robot", "truck", "tractor", "drone", "crane", "train", "boat", "printer",
                "pump", "radio"),
}
_T_SUBJECT_ADJECTIVES = {
    "animal": ("small", "hungry", "old", "young", "quiet", "brown", "lazy", "clever"),
    "person": ("tired", "happy", "old", "young", "busy", "careful", "clever", "quiet"),
    "machine": ("new", "old", "broken", "red", "noisy", "heavy", "small", "shiny"),
}
_T_STATES = {  # "The cat was {state} because it ..."
    "animal": ("hungry", "tired", "happy", "afraid", "cold"),
    "person": ("tired", "happy", "angry", "proud", "worried"),
    "machine": ("hot", "slow", "loud", "busy", "dirty"),
}
_T_VERBS = {  # (past tense, kind of object)
    "animal": (("chased", "animal"), ("watched", "person"), ("ate", "food"), ("found", "thing"),
               ("carried", "thing"), ("followed", "person"), ("smelled", "food")),
    "person": (("cooked", "food"), ("bought", "food"), ("sold", "thing"), ("painted", "thing"),
               ("fixed", "machine"), ("drove", "machine"), ("fed", "animal"), ("found", "thing")),
    "machine": (("lifted", "thing"), ("moved", "thing"), ("carried", "food"), ("pulled", "machine"),
                ("scanned", "thing"), ("delivered", "food"), ("towed", "machine")),
}
_T_OBJECTS = {
    "food": ("bread", "apples", "fish", "cheese", "corn", "soup", "eggs", "rice", "honey", "carrots"),
    "thing": ("box", "ball", "letter", "key", "map", "rope", "basket", "lamp", "chair", "book"),
    "animal": _T_SUBJECTS["animal"],
    "person": _T_SUBJECTS["person"],
    "machine": _T_SUBJECTS["machine"],
}
_T_OBJECT_ADJECTIVES = {
    "food": ("fresh", "warm", "sweet", "cold"),
    "thing": ("red", "heavy", "old", "little"),
    "animal": ("small", "old", "brown", "young"),
    "person": ("old", "young", "tired", "busy"),
    "machine": ("new", "old", "broken", "shiny"),
}
_T_PLACES = ("in the garden", "near the river", "at the market", "on the hill", "behind the barn",
             "under the bridge", "in the city", "by the lake", "at the station", "in the forest",
             "on the farm", "near the school", "in the kitchen", "at the harbor", "on the road",
             "in the village")
_T_TIMES = ("in the morning", "at night", "after lunch", "before dinner", "on monday",
            "on friday", "in the evening", "at noon", "every day", "last week")
_T_NAMES = {"she": ("Anna", "Mary", "Lena", "Sara"), "he": ("Tom", "Paul", "Jack", "Max")}
_TEMPLATE_DOCUMENTS = 11000
_TEMPLATE_SENTENCES = (3, 8)   # sentences per document, inclusive
_GENERATOR_VERSION = 1          # bump when a generator changes (the text hash would catch it anyway)


def _template_object(d: _Draws, verb_kind: str) -> str:
    noun = d.pick(_T_OBJECTS[verb_kind])
    if d.chance(0.4):
        return f"the {d.pick(_T_OBJECT_ADJECTIVES[verb_kind])} {noun}"
    return f"the {noun}"


def _template_document(d: _Draws) -> str:
    kind = d.pick(tuple(_T_SUBJECTS))
    noun = d.pick(_T_SUBJECTS[kind])
    adjective = d.pick(_T_SUBJECT_ADJECTIVES[kind])
    pronoun = "it" if kind != "person" else d.pick(("she", "he"))
    name = d.pick(_T_NAMES[pronoun]) if kind == "person" else None
    verbs = _T_VERBS[kind]
    sentences = []
    for i in range(d.between(*_TEMPLATE_SENTENCES)):
        if i == 0:
            subject = f"the {adjective} {noun}"
        else:
            subject = d.weighted((f"the {noun}", pronoun, f"the {adjective} {noun}", name or pronoun),
                                 (3, 4, 1, 1 if name else 0))
        verb, obj_kind = d.pick(verbs)
        obj = _template_object(d, obj_kind)
        template = d.below(6)
        if template == 0:
            s = f"{subject} {verb} {obj} {d.pick(_T_PLACES)}."
        elif template == 1:
            s = f"{d.pick(_T_TIMES)}, {subject} {verb} {obj}."
        elif template == 2:
            verb2, obj_kind2 = d.pick(verbs)
            s = f"{subject} {verb} {obj} and then {verb2} {_template_object(d, obj_kind2)}."
        elif template == 3:
            s = f"{subject} was {d.pick(_T_STATES[kind])} because {pronoun} {verb} {obj} " \
                f"{d.pick(_T_PLACES)}."
        elif template == 4:
            s = f"{subject} {verb} {obj} {d.pick(_T_PLACES)} {d.pick(_T_TIMES)}."
        else:
            s = f"later {pronoun} {verb} {obj}."
        sentences.append(s[0].upper() + s[1:])
    return " ".join(sentences)


def _template_sentence_count() -> int:
    """Distinct sentences the grammar can produce with a first-mention subject ("the ADJ NOUN")
    — a lower bound on its variety."""
    total = 0
    for kind, nouns in _T_SUBJECTS.items():
        subjects = len(nouns) * len(_T_SUBJECT_ADJECTIVES[kind])
        objects = [len(_T_OBJECTS[k]) * (1 + len(_T_OBJECT_ADJECTIVES[k])) for _, k in _T_VERBS[kind]]
        vo = sum(objects)  # verb + object phrases
        total += subjects * vo * (len(_T_PLACES)                      # template 0
                                  + len(_T_TIMES)                     # template 1
                                  + vo                                # template 2
                                  + len(_T_STATES[kind]) * len(_T_PLACES)  # template 3
                                  + len(_T_PLACES) * len(_T_TIMES))   # template 4
    return total


def _templates_documents(seed: int) -> list[str]:
    d = _Draws("templates", seed)
    return [_template_document(d) for _ in range(_TEMPLATE_DOCUMENTS)]


# Structured records: log files of one service each, in one of three line formats.
_R_SERVICES = ("auth", "api", "billing", "cache", "db", "gateway", "mailer", "search", "storage",
               "worker")
_R_LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")
_R_LEVEL_WEIGHTS = (0.78, 0.12, 0.06, 0.04)
_R_STATUS = {"INFO": (200, 200, 200, 201, 204, 304), "WARN": (404, 429, 200, 408),
             "ERROR": (500, 502, 503, 504), "DEBUG": (200,)}
_R_METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
_R_PATHS = ("/v1/users", "/v1/orders", "/v1/items", "/v1/login", "/v1/search", "/v2/cart",
            "/v2/payments", "/health")
_R_MESSAGES = {
    "INFO": ("request served", "user {uid} logged in", "cache hit for key {key}",
             "job {job} finished in {ms}ms", "session {req} created", "config reloaded"),
    "WARN": ("slow response from {peer}", "retrying connection to {peer}", "disk usage at {pct}%",
             "rate limit reached for user {uid}"),
    "ERROR": ("connection refused by {peer}", "timeout after {ms}ms", "invalid token for user {uid}",
              "job {job} failed with code {code}"),
    "DEBUG": ("cache miss for key {key}", "opened connection to {peer}"),
}
_RECORD_DOCUMENTS = 850
_RECORD_LINES = (10, 40)        # lines per log file, inclusive


def _record_document(d: _Draws) -> str:
    import datetime

    service = d.pick(_R_SERVICES)
    host = f"{service}-{d.between(1, 12):02d}"
    fmt = d.below(3)
    when = datetime.datetime(2024, 1, 1) + datetime.timedelta(
        days=d.below(366), seconds=d.below(86400))
    lines = []
    for _ in range(d.between(*_RECORD_LINES)):
        when += datetime.timedelta(seconds=d.weighted((0, 1, 2, 5, 17, 60), (4, 4, 3, 2, 1, 1)))
        level = d.weighted(_R_LEVELS, _R_LEVEL_WEIGHTS)
        status = d.pick(_R_STATUS[level])
        req = f"{d.below(1 << 16):04x}"
        ms = d.between(1, 40) if level != "ERROR" else d.pick((1000, 2000, 5000, 30000))
        fields = {"uid": d.between(1, 999), "key": f"{d.pick(('user', 'item', 'page'))}:{d.between(1, 99)}",
                  "job": d.between(100, 999), "ms": ms, "req": req, "pct": d.between(80, 99),
                  "code": d.between(1, 9),
                  "peer": f"{d.pick(_R_SERVICES)}-{d.between(1, 12):02d}"}
        message = d.pick(_R_MESSAGES[level]).format(**fields)
        method, path = d.pick(_R_METHODS), d.pick(_R_PATHS)
        if fmt == 0:
            line = (f"{when:%Y-%m-%d %H:%M:%S} {level:<5} {host} [req={req}] {method} {path} "
                    f"{status} {ms}ms - {message}")
        elif fmt == 1:
            line = (f"ts={when:%Y-%m-%dT%H:%M:%SZ} level={level.lower()} host={host} req={req} "
                    f"method={method} path={path} status={status} dur_ms={ms} msg=\"{message}\"")
        else:
            line = f"{when:%Y-%m-%dT%H:%M:%S},{level},{host},{req},{method},{path},{status},{ms},{message}"
        lines.append(line)
    return "\n".join(lines)


def _records_documents(seed: int) -> list[str]:
    d = _Draws("records", seed)
    return [_record_document(d) for _ in range(_RECORD_DOCUMENTS)]


# Python source of the standard library: a deterministic selection of whole files.
_CODE_TARGET_BYTES = 2_500_000
_CODE_MAX_FILE_BYTES = 100_000
# Besides the test directories: generated tables (encodings), prose in a string (pydoc_data).
_CODE_SKIP_DIRS = _STDLIB_SKIP_DIRS | {"encodings", "pydoc_data", "turtledemo"}


def _code_documents(cache: _Cache | None) -> list[str]:
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


def _resolve_user_file(source: str) -> Path:
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
    return path.resolve()


def _read_user_file(path: Path) -> list[str]:
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


# --------------------------------------------------------------------------------------------
# Tokenization with a best-effort disk cache
# --------------------------------------------------------------------------------------------


class _Cache:
    """Best-effort file cache: unreadable entries are recomputed, failed writes are ignored
    (a read-only home directory must not break loading). Writes are atomic (temp + os.replace)
    so a crash or a concurrent process never leaves a half-written entry."""

    def __init__(self, cache_dir: str | Path | None) -> None:
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.dir = root / "data"

    def _write(self, name: str, write: Callable[[Any], None], binary: bool) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.", suffix=".tmp")
            try:
                mode = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8"}
                with os.fdopen(fd, **mode) as f:
                    write(f)
                os.replace(tmp, self.dir / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
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


def _cached_tokenizer(cache: _Cache | None, documents: list[str], text_sha: str,
                      vocab_size: int) -> Tokenizer:
    import tokenizers

    key = _short_hash(json.dumps({"text": text_sha, "vocab_size": vocab_size,
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


def _cached_ids(cache: _Cache | None, documents: list[str], text_sha: str, tokenizer: Tokenizer,
                eos_id: int) -> np.ndarray:
    """All documents encoded, each followed by ``eos_id``, concatenated (int32)."""
    key = _short_hash(json.dumps({"text": text_sha,
                                  "tokenizer": _short_hash(tokenizer.to_str())}))
    name = f"ids-{key}.npy"
    if cache is not None:
        ids = cache.read_array(name)
        if ids is not None and ids.ndim == 1:
            return ids
    encodings = tokenizer.encode_batch(documents, add_special_tokens=False)
    parts: list[np.ndarray] = []
    for enc in encodings:
        parts.append(np.asarray(enc.ids, dtype=np.int32))
        parts.append(np.asarray([eos_id], dtype=np.int32))
    ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    if cache is not None:
        cache.write_array(name, ids)
    return ids


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{what} must be an integer, got {value!r}.")
    if value < minimum:
        raise DataError(f"{what} must be at least {minimum}, got {value}.")
    return int(value)


def _as_id_list(ids: Any) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise DataError(f"Expected a 1-D sequence of token ids, got shape {arr.shape}.")
    return [int(i) for i in arr]


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table used by byte-level BPE: printable Latin-1 bytes map
    to themselves, the remaining bytes to code points 256, 257, ... in byte order."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _documents_sha256(documents: Iterable[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        data = doc.encode("utf-8")
        # Length-prefix each document so that document boundaries are part of the hash.
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"Could not read corpus file {path}: {exc.strerror or exc}.") from None
    return h.hexdigest()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
