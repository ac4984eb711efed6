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
``"templates"``, ``"records"``, ``"code"``
    Validation languages: English sentences from a small seeded grammar (low entropy), seeded
    service log files (structured text), and a fixed selection of the standard library's .py
    files (code). Tokenizer and ids are cached like ``"stdlib"``.
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

Layout (one concept per module; each imports only those listed before it):

``errors``      :class:`DataError` and the integer check that raises it
``synthetic``   :class:`MarkovSource`, the seeded Markov chain and its exact entropies
``tokenizer``   byte-level BPE: :func:`train_bpe_tokenizer`, ``encode_documents``, ``EOS_TOKEN``
``cache``       the on-disk cache under ``cache_dir`` (:func:`default_cache_dir`): extracted
                text, tokenizers and token streams, keyed by hashes of their inputs
``generators``  the generated sources ``"templates"`` and ``"records"``
``sources``     the built-in sources (``BUILTIN_TEXT_SOURCES``) as lists of documents
``readers``     user files: ``resolve_user_file``, ``read_user_file`` (.txt, .jsonl, .parquet)
``corpus``      :class:`Corpus`, :func:`load_corpus`, :func:`corpus_from_spec`, the builders

This package re-exports the public names; import them from ``memaudit.data``.
"""

from __future__ import annotations

from .cache import default_cache_dir
from .corpus import (DEFAULT_TEXT_SEQ_LEN, MAX_TEST_POOL, SPEC_FORMAT, Corpus, corpus_from_spec,
                     load_corpus)
from .errors import DataError
from .readers import read_user_file, resolve_user_file
from .sources import BUILTIN_TEXT_SOURCES
from .synthetic import (DEFAULT_N_SUCCESSORS, DEFAULT_SYNTHETIC_SEQ_LEN, DEFAULT_SYNTHETIC_VOCAB,
                        SYNTHETIC_CHUNK, SYNTHETIC_DISJOINT_HORIZON, MarkovSource)
from .tokenizer import DEFAULT_TEXT_VOCAB, EOS_TOKEN, encode_documents, train_bpe_tokenizer

__all__ = [
    "Corpus",
    "DataError",
    "MarkovSource",
    "corpus_from_spec",
    "default_cache_dir",
    "load_corpus",
    "train_bpe_tokenizer",
    "encode_documents",
    "read_user_file",
    "resolve_user_file",
    "EOS_TOKEN",
    "SPEC_FORMAT",
    "BUILTIN_TEXT_SOURCES",
    "DEFAULT_SYNTHETIC_SEQ_LEN",
    "DEFAULT_SYNTHETIC_VOCAB",
    "DEFAULT_N_SUCCESSORS",
    "DEFAULT_TEXT_SEQ_LEN",
    "DEFAULT_TEXT_VOCAB",
    "MAX_TEST_POOL",
    "SYNTHETIC_CHUNK",
    "SYNTHETIC_DISJOINT_HORIZON",
]
