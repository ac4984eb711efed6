"""The built-in validation languages of memaudit.data: "templates" (a seeded English grammar),
"records" (seeded log files) and "code" (standard-library Python source).

Full-size corpora take seconds to tokenize, so the block-level tests shrink the generators (a few
hundred documents, a small BPE vocabulary); the size tests check the full generators at the level
of documents, which is fast."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from memaudit.data import generators, sources
from memaudit.data import BUILTIN_TEXT_SOURCES, DataError, corpus_from_spec, load_corpus

SOURCES = ("templates", "records", "code")
SMALL_VOCAB = 320
SEQ_LEN = 32


def _rows(blocks: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in blocks.numpy()}


@pytest.fixture()
def small_sources(monkeypatch):
    """Generators cut to a few hundred documents / ~100 kB of code (the grammar is unchanged)."""
    monkeypatch.setattr(generators, "_TEMPLATE_DOCUMENTS", 300)
    monkeypatch.setattr(generators, "_RECORD_DOCUMENTS", 30)
    monkeypatch.setattr(sources, "_CODE_TARGET_BYTES", 100_000)


def _load(source, seed, cache):
    return load_corpus(source, seq_len=SEQ_LEN, seed=seed, vocab_size=SMALL_VOCAB, cache_dir=cache)


def test_sources_are_listed():
    assert set(SOURCES) <= set(BUILTIN_TEXT_SOURCES)
    with pytest.raises(DataError, match="'templates', 'records', 'code'"):
        load_corpus("no-such-source")


@pytest.mark.parametrize("source", SOURCES)
def test_blocks_deterministic_disjoint_and_in_vocab(source, small_sources, tmp_path):
    a = _load(source, 0, tmp_path / "a")
    b = _load(source, 0, tmp_path / "b")  # separate cache: rebuilt from scratch
    assert a.spec == b.spec and a.spec["source"] == source and a.name == source
    assert a.max_train == b.max_train and a.max_train > 100
    assert torch.equal(a.train_blocks(a.max_train), b.train_blocks(b.max_train))
    assert torch.equal(a.test_blocks(a.max_test), b.test_blocks(b.max_test))
    assert a.tokenizer.to_str() == b.tokenizer.to_str()

    train, test = a.train_blocks(a.max_train), a.test_blocks(a.max_test)
    assert train.shape[1] == test.shape[1] == SEQ_LEN and train.dtype == torch.int64
    assert a.max_test > 0 and not (_rows(train) & _rows(test))
    assert a.vocab_size <= SMALL_VOCAB
    assert int(train.min()) >= 0 and int(max(train.max(), test.max())) < a.vocab_size
    # Nested training sets.
    assert torch.equal(a.train_blocks(10), train[:10])

    # The spec rebuilds the same corpus (from the cache, and with the checkpoint's tokenizer).
    c = corpus_from_spec(a.spec, tokenizer=a.tokenizer, cache_dir=tmp_path / "c")
    assert torch.equal(c.train_blocks(c.max_train), train)
    assert torch.equal(c.test_blocks(c.max_test), test)


@pytest.mark.parametrize("source", SOURCES)
def test_other_seed_other_blocks(source, small_sources, tmp_path):
    a = _load(source, 0, tmp_path)
    b = _load(source, 1, tmp_path)
    assert a.spec["seed"] == 0 and b.spec["seed"] == 1
    n = min(a.max_train, b.max_train)
    assert not torch.equal(a.train_blocks(n), b.train_blocks(n))
    if source == "code":  # the same files, another permutation of the blocks
        assert a.spec["text_sha256"] == b.spec["text_sha256"]
    else:  # other documents
        assert a.spec["text_sha256"] != b.spec["text_sha256"]


def test_changed_generator_is_detected(small_sources, tmp_path, monkeypatch):
    corpus = _load("templates", 0, tmp_path)
    monkeypatch.setattr(generators, "_TEMPLATE_DOCUMENTS", 301)
    with pytest.raises(DataError, match="differs from the one recorded"):
        corpus_from_spec(corpus.spec, cache_dir=tmp_path)


def test_generated_documents_depend_only_on_seed(small_sources):
    assert generators.records_documents(3) == generators.records_documents(3)
    assert generators.records_documents(3) != generators.records_documents(4)
    first = generators.templates_documents(0)
    assert first == generators.templates_documents(0)
    assert first != generators.templates_documents(1)


def test_full_size_generators():
    """The sizes docs/validation-plan.md and the README state (documents, MB; blocks are
    measured there: ≥ 12,000 at BPE 512, L = 64, for every source)."""
    templates = generators.templates_documents(0)
    records = generators.records_documents(0)
    code = sources.code_documents(None)
    mb = [sum(len(d.encode("utf-8")) for d in docs) / 1e6 for docs in (templates, records, code)]
    assert len(templates) == 11_000 and 2.5 < mb[0] < 3.5
    assert len(records) == 850 and 1.8 < mb[1] < 2.8
    assert 2.5 <= mb[2] < 2.7 and all(len(d.encode("utf-8")) <= 100_000 for d in code)
    # Far too many distinct sentences to store: ≥ 10^6 (first-mention subjects alone).
    assert generators.template_sentence_count() >= 10**6
    sentences = {s for doc in templates for s in doc.split(". ")}
    assert len(sentences) > 0.75 * sum(doc.count(". ") + 1 for doc in templates)
    # Records: every line of a log file carries the file's host (the first host name on a line).
    for doc in records[:50]:
        hosts = {re.search(r"\b([a-z]+-\d\d)\b", line).group(1) for line in doc.splitlines()}
        assert len(hosts) == 1 and 10 <= len(doc.splitlines()) <= 40


def test_template_language_is_low_entropy(monkeypatch):
    """A word of the template language is largely determined by its two neighbours: the empirical
    conditional entropy H(w_i | w_i-1, w_i+1) is ~1.4 nats, against ln(157) = 5.1 for its words."""
    monkeypatch.setattr(generators, "_TEMPLATE_DOCUMENTS", 2000)  # the first 2,000 documents
    text = " ".join(generators.templates_documents(0)).lower()
    words = text.replace(".", " .").replace(",", " ,").split()
    contexts: dict[tuple[str, str], dict[str, int]] = {}
    for a, b, c in zip(words, words[1:], words[2:]):
        counts = contexts.setdefault((a, c), {})
        counts[b] = counts.get(b, 0) + 1
    h = 0.0
    for counts in contexts.values():
        x = np.array(list(counts.values()), dtype=float)
        h -= float((x * np.log(x / x.sum())).sum())
    h /= len(words) - 2
    vocabulary = len(set(words))
    assert vocabulary > 150 and 0.5 < h < 1.6 < np.log(vocabulary) / 3
