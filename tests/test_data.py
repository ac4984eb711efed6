"""Tests for memaudit.data: nested/deterministic/disjoint blocks, the Markov source's exact
entropies, text pipeline, spec round trips, caching and every DataError path."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, pre_tokenizers

from memaudit import data as data_mod
from memaudit.data import cache as data_cache
from memaudit.data import sources as data_sources
from memaudit.data import tokenizer as data_tokenizer
from memaudit.data import (
    EOS_TOKEN,
    Corpus,
    DataError,
    MarkovSource,
    corpus_from_spec,
    load_corpus,
    train_bpe_tokenizer,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _row_set(blocks: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in blocks.numpy()}


def _docs_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics) if topics[k].strip()]


@pytest.fixture(scope="module")
def docs() -> Corpus:
    return load_corpus("docs")


# Enough varied text for a few dozen blocks, with multi-byte characters for decode tests.
SAMPLE_DOCS = [
    f"Paragraph {i}: the quick brown fox — número {i * 7} — jumps over the lazy dog 😀. "
    f"Café {i % 5} naïve façade {i * i}."
    for i in range(40)
]


# --------------------------------------------------------------------------------------------
# Synthetic source
# --------------------------------------------------------------------------------------------


def test_synthetic_defaults_shapes_and_ranges():
    c = load_corpus()
    assert c.name == "synthetic" and c.seq_len == 32 and c.vocab_size == 32
    assert c.tokenizer is None and c.max_train is None
    assert isinstance(c.source, MarkovSource)
    tr, te = c.train_blocks(300), c.test_blocks(200)
    for b, n in ((tr, 300), (te, 200)):
        assert b.shape == (n, 32) and b.dtype == torch.int64
        assert int(b.min()) >= 0 and int(b.max()) < 32
    assert c.train_blocks(0).shape == (0, 32)
    json.dumps(c.spec)
    assert c.spec["vocab_size"] == 32 and c.spec["n_successors"] == 8


def test_synthetic_nesting_across_chunk_boundaries():
    c = load_corpus("synthetic", seed=3)
    big = c.train_blocks(9000)  # spans three generation chunks
    assert torch.equal(c.train_blocks(100), big[:100])
    assert torch.equal(c.train_blocks(4100), big[:4100])
    assert torch.equal(c.test_blocks(50), c.test_blocks(5000)[:50])


def test_synthetic_determinism_and_seed_dependence():
    a = load_corpus("synthetic", seed=7, seq_len=16, vocab_size=20)
    b = load_corpus("synthetic", seed=7, seq_len=16, vocab_size=20)
    other = load_corpus("synthetic", seed=8, seq_len=16, vocab_size=20)
    assert torch.equal(a.train_blocks(500), b.train_blocks(500))
    assert torch.equal(a.test_blocks(500), b.test_blocks(500))
    assert np.array_equal(a.source.transition, b.source.transition)
    assert not torch.equal(a.train_blocks(500), other.train_blocks(500))
    assert not np.array_equal(a.source.transition, other.source.transition)
    # Train and test streams are different streams.
    assert not torch.equal(a.train_blocks(500), a.test_blocks(500))


def test_test_blocks_do_not_depend_on_call_history():
    fresh = load_corpus("synthetic", seed=2).test_blocks(64)
    c = load_corpus("synthetic", seed=2)
    c.train_blocks(70000)
    assert torch.equal(c.test_blocks(64), fresh)


def test_markov_chain_structure_and_sampling_statistics():
    src = MarkovSource(vocab_size=12, n_successors=3, seed=5)
    t = src.transition
    assert t.shape == (12, 12)
    assert np.allclose(t.sum(axis=1), 1.0)
    assert ((t > 0).sum(axis=1) == 3).all()  # exactly K distinct successors per token
    x = src.sample("train", 40000, 6)
    pairs_prob = t[x[:, :-1], x[:, 1:]]
    assert (pairs_prob > 0).all()  # never an impossible transition
    # Empirical transition frequencies match the chain (loose bound: ~200k transitions).
    counts = np.zeros((12, 12))
    np.add.at(counts, (x[:, :-1].ravel(), x[:, 1:].ravel()), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    assert np.abs(empirical - t).max() < 0.03
    # Uniform initial distribution.
    first = np.bincount(x[:, 0], minlength=12) / len(x)
    assert np.abs(first - 1 / 12).max() < 0.01


def test_synthetic_train_test_disjoint_default_chain():
    c = load_corpus()
    train = _row_set(c.train_blocks(data_mod.SYNTHETIC_DISJOINT_HORIZON))
    test = c.test_blocks(3000)
    assert not (_row_set(test) & train)


def test_synthetic_disjointness_filter_really_drops_collisions():
    # A small chain where train/test collisions are common, so the filter is exercised.
    spec = {"source": "synthetic", "seq_len": 12, "seed": 0, "vocab_size": 4, "n_successors": 2}
    c = corpus_from_spec(spec)
    train = _row_set(c.train_blocks(data_mod.SYNTHETIC_DISJOINT_HORIZON))
    raw = c.source.sample("test", 500, 12)
    assert any(row.tobytes() in train for row in raw), "expected collisions on this tiny chain"
    test = c.test_blocks(500)
    assert test.shape == (500, 12)
    assert not (_row_set(test) & train)
    # Kept rows are the raw test stream in order, minus the colliding ones.
    # (most of this chain's sequences are in the train prefix, so it takes several chunks)
    kept = [row for row in c.source.sample("test", 12 * 4096, 12) if row.tobytes() not in train]
    assert len(kept) >= 500
    assert np.array_equal(test.numpy(), np.stack(kept[:500]))


def test_synthetic_too_small_chain_for_held_out_data():
    # 3 * 2**3 = 24 possible sequences: all of them occur among the train prefix.
    c = corpus_from_spec({"source": "synthetic", "seq_len": 4, "seed": 0, "vocab_size": 3,
                          "n_successors": 2})
    with pytest.raises(DataError, match="too small"):
        c.test_blocks(10)


def test_markov_invalid_parameters():
    with pytest.raises(DataError, match="n_successors"):
        MarkovSource(vocab_size=4, n_successors=5)
    with pytest.raises(DataError, match="seed"):
        MarkovSource(seed=-1)
    with pytest.raises(DataError, match="vocab_size"):
        load_corpus("synthetic", vocab_size=1)


def _brute_force_conditional_entropy(src: MarkovSource, length: int):
    """All V**L sequences and, per position, H(x_i | rest) from the joint by enumeration
    (NaN where the rest has probability zero)."""
    v = src.vocab_size
    seqs = list(itertools.product(range(v), repeat=length))

    def joint(s):
        p = src.initial[s[0]]
        for a, b in zip(s[:-1], s[1:]):
            p *= src.transition[a, b]
        return p

    ent = np.zeros((len(seqs), length))
    for r, s in enumerate(seqs):
        for i in range(length):
            probs = np.array([joint(s[:i] + (u,) + s[i + 1:]) for u in range(v)])
            z = probs.sum()
            if z == 0:
                ent[r, i] = np.nan
                continue
            q = probs[probs > 0] / z
            ent[r, i] = -(q * np.log(q)).sum()
    return torch.tensor(seqs, dtype=torch.long).reshape(len(seqs), length), ent


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_conditional_entropy_matches_enumeration(length):
    src = MarkovSource(vocab_size=4, n_successors=3, seed=11)
    blocks, expected = _brute_force_conditional_entropy(src, length)
    defined = ~np.isnan(expected)
    assert defined.sum() >= 4  # enough sequences with a possible "rest" to mean something
    for got in (src.conditional_entropy(blocks), _direct(src).conditional_entropy(blocks)):
        assert got.shape == (len(blocks), length) and got.dtype == torch.float32
        # Wherever p(rest) > 0 the chain formula must equal the enumerated conditional.
        assert np.allclose(got.numpy()[defined], expected[defined], atol=1e-5)
        # It is never undefined where the true conditional exists.
        assert not np.isnan(got.numpy()[defined]).any()


def _direct(src: MarkovSource) -> MarkovSource:
    """Same chain, forced onto the large-vocabulary (direct scoring) code path."""
    clone = MarkovSource(src.vocab_size, src.n_successors, src.seed)
    clone._TABLE_MAX_VOCAB = 0
    return clone


def test_conditional_entropy_is_local_and_nan_when_blanket_impossible():
    src = MarkovSource(vocab_size=4, n_successors=2, seed=3)
    t = src.transition
    valid = torch.from_numpy(src.sample("train", 1, 6))[0]
    h_valid = src.conditional_entropy(valid[None])[0]
    # Break the sequence far from position 1: its entropy depends only on x_0 and x_2.
    broken = valid.clone()
    broken[5] = int(np.flatnonzero(t[int(broken[4])] == 0)[0])
    h_broken = src.conditional_entropy(torch.stack([valid, broken]))
    assert torch.equal(h_broken[0], h_valid)
    assert torch.allclose(h_broken[1, :4], h_valid[:4])
    # Position 2 with neighbours (a, c) such that no v has a -> v -> c: undefined, NaN.
    a, c = next((a, c) for a in range(4) for c in range(4) if not (t[a] * t[:, c]).any())
    seq = torch.tensor([[0, a, 0, c, 0]])
    h = src.conditional_entropy(seq)
    assert torch.isnan(h[0, 2])
    assert torch.isnan(_direct(src).conditional_entropy(seq)[0, 2])


def test_conditional_entropy_on_chain_samples_is_finite_and_bounded():
    c = load_corpus()
    blocks = c.train_blocks(2000)
    h = c.source.conditional_entropy(blocks)
    assert h.shape == (2000, 32)
    assert torch.isfinite(h).all()
    assert (h >= 0).all()
    # Interior tokens can only be one of the K successors of their left neighbour.
    assert (h[:, 1:] <= math.log(8) + 1e-5).all()
    assert (h[:, 0] <= math.log(32) + 1e-5).all()
    with pytest.raises(DataError):
        c.source.conditional_entropy(torch.full((1, 4), 32))


def test_log_prob_is_a_normalised_distribution():
    src = MarkovSource(vocab_size=4, n_successors=2, seed=1)
    seqs = torch.tensor(list(itertools.product(range(4), repeat=3)))
    total = torch.logsumexp(src.log_prob(seqs), dim=0)
    assert abs(float(total)) < 1e-9


def test_synthetic_decode_and_token_strings():
    c = load_corpus()
    assert c.decode(torch.tensor([17, 3, 0])) == "a17 a3 a0"
    assert c.token_strings([17, 3]) == ["a17", "a3"]


# --------------------------------------------------------------------------------------------
# Text corpora
# --------------------------------------------------------------------------------------------


def test_docs_shapes_ranges_and_pools(docs):
    assert docs.name == "docs" and docs.seq_len == 64
    assert docs.vocab_size == docs.tokenizer.get_vocab_size() == 512
    assert docs.source is None
    n_blocks = docs.max_train + docs.max_test
    assert docs.max_test == min(1024, max(1, n_blocks // 10))
    tr, te = docs.train_blocks(docs.max_train), docs.test_blocks(docs.max_test)
    for b in (tr, te):
        assert b.dtype == torch.int64 and b.shape[1] == 64
        assert int(b.min()) >= 0 and int(b.max()) < docs.vocab_size
    assert not (_row_set(tr) & _row_set(te))


def test_docs_nesting_and_copy_semantics(docs):
    assert torch.equal(docs.train_blocks(100), docs.train_blocks(1000)[:100])
    assert torch.equal(docs.test_blocks(10), docs.test_blocks(100)[:10])
    b = docs.train_blocks(5)
    b.zero_()  # callers mutating a returned tensor must not corrupt the corpus
    assert int(docs.train_blocks(5).sum()) > 0


def test_docs_blocks_are_a_permutation_of_the_eos_separated_stream(docs):
    # Undo the documented permutation and check the blocks tile the document stream.
    n_blocks = docs.max_train + docs.max_test
    order = np.random.default_rng(0).permutation(n_blocks)
    blocks = np.empty((n_blocks, 64), dtype=np.int64)
    blocks[order[:docs.max_train]] = docs.train_blocks(docs.max_train).numpy()
    blocks[order[docs.max_train:]] = docs.test_blocks(docs.max_test).numpy()
    text = docs.decode(blocks.ravel())
    expected = "".join(d + EOS_TOKEN for d in _docs_documents())
    assert len(text) > 0.9 * len(expected)
    assert expected.startswith(text)


def test_docs_determinism_and_seed(docs):
    again = load_corpus("docs")
    assert again.tokenizer.to_str() == docs.tokenizer.to_str()
    assert torch.equal(again.train_blocks(500), docs.train_blocks(500))
    assert torch.equal(again.test_blocks(100), docs.test_blocks(100))
    other = load_corpus("docs", seed=1)
    assert not torch.equal(other.train_blocks(500), docs.train_blocks(500))
    # Same blocks overall, only a different split/order.
    all_a = torch.cat([docs.train_blocks(docs.max_train), docs.test_blocks(docs.max_test)])
    all_b = torch.cat([other.train_blocks(other.max_train), other.test_blocks(other.max_test)])
    assert sorted(map(tuple, all_a.tolist())) == sorted(map(tuple, all_b.tolist()))


def test_docs_seq_len_and_vocab_size_options():
    c = load_corpus("docs", seq_len=128, vocab_size=300)
    assert c.seq_len == 128 and c.vocab_size == 300
    assert c.train_blocks(3).shape == (3, 128)
    assert int(c.train_blocks(c.max_train).max()) < 300


def test_docs_request_too_many_blocks(docs):
    with pytest.raises(DataError, match=str(docs.max_train)):
        docs.train_blocks(docs.max_train + 1)
    with pytest.raises(DataError, match=str(docs.max_test)):
        docs.test_blocks(docs.max_test + 1)
    with pytest.raises(DataError, match="at least 0"):
        docs.train_blocks(-1)
    assert docs.train_blocks(docs.max_train).shape[0] == docs.max_train


def test_token_strings_concatenate_to_decode(tmp_path):
    path = tmp_path / "uni.txt"
    path.write_text("\n\n".join(SAMPLE_DOCS), encoding="utf-8")
    c = load_corpus(str(path), seq_len=8, cache_dir=tmp_path / "cache")
    blocks = torch.cat([c.train_blocks(c.max_train), c.test_blocks(c.max_test)])
    for row in blocks:
        strings = c.token_strings(row)
        assert len(strings) == 8
        assert "".join(strings) == c.decode(row)
    assert any(EOS_TOKEN in s for row in blocks for s in c.token_strings(row))
    assert "😀" in c.decode(blocks.ravel())


def test_byte_table_matches_bytelevel_alphabet():
    table = data_tokenizer.bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())


def test_tokenizer_training_is_deterministic():
    docs = _docs_documents()
    a = train_bpe_tokenizer(docs, 400)
    b = train_bpe_tokenizer(docs, 400)
    assert a.to_str() == b.to_str()
    # And across processes with other hash seeds / thread counts.
    code = (
        "import hashlib; from pydoc_data.topics import topics; "
        "from memaudit.data import train_bpe_tokenizer; "
        "docs = [topics[k] for k in sorted(topics) if topics[k].strip()]; "
        "print(hashlib.sha256(train_bpe_tokenizer(docs, 400).to_str().encode()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="123", RAYON_NUM_THREADS="1",
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == hashlib.sha256(a.to_str().encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


def test_spec_round_trip_synthetic():
    c = load_corpus("synthetic", seq_len=20, seed=4, vocab_size=40)
    spec = json.loads(json.dumps(c.spec))
    r = corpus_from_spec(spec)
    assert r.seq_len == 20 and r.vocab_size == 40 and r.spec == c.spec
    assert torch.equal(r.train_blocks(300), c.train_blocks(300))
    assert torch.equal(r.test_blocks(300), c.test_blocks(300))


def test_spec_round_trip_docs_with_and_without_tokenizer(docs, tmp_path):
    spec = json.loads(json.dumps(docs.spec))
    assert spec["source"] == "docs" and spec["seq_len"] == 64 and spec["seed"] == 0
    retrained = corpus_from_spec(spec)
    assert torch.equal(retrained.train_blocks(docs.max_train), docs.train_blocks(docs.max_train))
    assert torch.equal(retrained.test_blocks(docs.max_test), docs.test_blocks(docs.max_test))
    # A tokenizer loaded from a checkpoint's tokenizer.json is reused as is.
    tok_file = tmp_path / "tokenizer.json"
    docs.tokenizer.save(str(tok_file))
    reused = corpus_from_spec(spec, tokenizer=Tokenizer.from_file(str(tok_file)))
    assert torch.equal(reused.train_blocks(docs.max_train), docs.train_blocks(docs.max_train))
    assert reused.spec == docs.spec


def test_spec_rejects_changed_text_or_wrong_tokenizer(docs):
    with pytest.raises(DataError, match="differs"):
        corpus_from_spec(dict(docs.spec, text_sha256="0" * 64))
    small = train_bpe_tokenizer(_docs_documents()[:20], 300)
    with pytest.raises(DataError, match="tokenizer"):
        corpus_from_spec(docs.spec, tokenizer=small)
    with pytest.raises(DataError, match="Unknown corpus source"):
        corpus_from_spec(dict(docs.spec, source="nope"))
    with pytest.raises(DataError, match="missing"):
        corpus_from_spec({"source": "docs"})


def test_spec_round_trip_user_file_and_change_detection(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(SAMPLE_DOCS), encoding="utf-8")
    c = load_corpus(str(path), seq_len=16, seed=3, vocab_size=300, cache_dir=tmp_path / "cache")
    assert c.name == str(path.resolve())
    assert c.spec["path"] == str(path.resolve())
    assert c.spec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    r = corpus_from_spec(json.loads(json.dumps(c.spec)), cache_dir=tmp_path / "other-cache")
    assert torch.equal(r.train_blocks(c.max_train), c.train_blocks(c.max_train))
    assert torch.equal(r.test_blocks(c.max_test), c.test_blocks(c.max_test))
    path.write_text("changed " + path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(DataError, match="changed"):
        corpus_from_spec(c.spec)


# --------------------------------------------------------------------------------------------
# User files
# --------------------------------------------------------------------------------------------


def test_txt_jsonl_parquet_with_same_documents_give_same_blocks(tmp_path):
    txt = tmp_path / "c.txt"
    # Blank-line runs of any length (and whitespace-only lines) separate documents.
    txt.write_text("\n\n\n".join(SAMPLE_DOCS[:20]) + "\n  \n" + "\n\n".join(SAMPLE_DOCS[20:])
                   + "\n", encoding="utf-8")
    assert data_mod.read_user_file(txt) == SAMPLE_DOCS
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(SAMPLE_DOCS))
                     + "\n\n", encoding="utf-8")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": SAMPLE_DOCS, "n": list(range(len(SAMPLE_DOCS)))}), parquet)
    corpora = [load_corpus(str(p), seq_len=16, cache_dir=tmp_path / "cache")
               for p in (txt, jsonl, parquet)]
    ref = corpora[0]
    assert ref.max_train > 10
    for c in corpora[1:]:
        assert c.tokenizer.to_str() == ref.tokenizer.to_str()
        assert torch.equal(c.train_blocks(c.max_train), ref.train_blocks(ref.max_train))
        assert torch.equal(c.test_blocks(c.max_test), ref.test_blocks(ref.max_test))
    eos = ref.tokenizer.token_to_id(EOS_TOKEN)
    all_blocks = torch.cat([ref.train_blocks(ref.max_train), ref.test_blocks(ref.max_test)])
    # One <|eos|> per document, except possibly the dropped tail.
    assert len(SAMPLE_DOCS) - 1 <= int((all_blocks == eos).sum()) <= len(SAMPLE_DOCS)


def test_repeated_text_never_puts_a_train_block_in_the_test_pool(tmp_path):
    path = tmp_path / "rep.txt"
    # Unique text followed by one sentence repeated many times: many blocks are exact duplicates.
    path.write_text("\n\n".join(SAMPLE_DOCS + ["the same sentence over and over."] * 300),
                    encoding="utf-8")
    c = load_corpus(str(path), seq_len=8, cache_dir=tmp_path / "cache")
    n_blocks_pool = min(1024, (c.max_train + c.max_test) // 10)  # lower bound on the raw pool
    assert c.max_test < n_blocks_pool, "expected duplicated held-out blocks to be dropped"
    assert c.max_test > 0
    assert not (_row_set(c.test_blocks(c.max_test)) & _row_set(c.train_blocks(c.max_train)))


def test_fully_repetitive_text_has_no_test_pool(tmp_path):
    path = tmp_path / "rep.txt"
    path.write_text("\n\n".join(["the same sentence over and over again."] * 200),
                    encoding="utf-8")
    c = load_corpus(str(path), seq_len=9, cache_dir=tmp_path / "cache")
    assert c.max_test == 0 and c.max_train > 0
    assert c.test_blocks(0).shape == (0, 9)
    with pytest.raises(DataError, match="repetitive"):
        c.test_blocks(1)


def test_cache_recovers_from_corrupt_entries(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(SAMPLE_DOCS), encoding="utf-8")
    cache = tmp_path / "cache"
    first = load_corpus(str(path), seq_len=16, cache_dir=cache)
    files = sorted((cache / "data").iterdir())
    assert any(f.name.startswith("tokenizer-") for f in files)
    assert any(f.name.startswith("ids-") for f in files)
    assert not any(f.name.endswith(".tmp") for f in files)
    for f in files:
        f.write_bytes(b"garbage")
    again = load_corpus(str(path), seq_len=16, cache_dir=cache)
    assert torch.equal(again.train_blocks(again.max_train), first.train_blocks(first.max_train))


# --------------------------------------------------------------------------------------------
# DataError cases
# --------------------------------------------------------------------------------------------


def test_error_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        load_corpus(str(tmp_path / "nope.txt"))
    assert "nope.txt" in str(e.value)


def test_error_bad_extension_and_unknown_source(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("text\nhello\n")
    with pytest.raises(DataError, match="Unsupported corpus file type") as e:
        load_corpus(str(p))
    assert "data.csv" in str(e.value)
    with pytest.raises(DataError, match="Unknown corpus source 'synthtic'"):
        load_corpus("synthtic")


@pytest.mark.parametrize("content", ["", "   \n\n \n"])
def test_error_empty_txt(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_text(content)
    with pytest.raises(DataError, match="no text") as e:
        load_corpus(str(p))
    assert "empty.txt" in str(e.value)


def test_error_non_utf8_txt(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(DataError, match="UTF-8"):
        load_corpus(str(p))


@pytest.mark.parametrize("lines, pattern", [
    (['{"text": "ok"}', '{"text": "unterminated'], "Line 2 .* not valid JSON"),
    (['{"text": "ok"}', '{"body": "no text field"}'], "Line 2 .* no \"text\" field"),
    (['["a list"]'], "Line 1 .* no \"text\" field"),
    (['{"text": 5}'], "not a string"),
    (['{"text": ""}', '{"text": "  "}'], "no text"),
])
def test_error_bad_jsonl(tmp_path, lines, pattern):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=pattern):
        load_corpus(str(p))


def test_error_parquet_missing_column_wrong_type_and_corrupt(tmp_path):
    p = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"body": ["hello"]}), p)
    with pytest.raises(DataError, match="no \"text\" column") as e:
        load_corpus(str(p))
    assert "body" in str(e.value)
    p2 = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), p2)
    with pytest.raises(DataError, match="not string"):
        load_corpus(str(p2))
    p3 = tmp_path / "corrupt.parquet"
    p3.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet"):
        load_corpus(str(p3))


def test_error_too_little_text(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("hi")
    with pytest.raises(DataError, match="too few") as e:
        load_corpus(str(p), seq_len=64)
    assert "tiny.txt" in str(e.value)


def test_error_bad_arguments():
    with pytest.raises(DataError, match="seq_len"):
        load_corpus("synthetic", seq_len=0)
    with pytest.raises(DataError, match="seed"):
        load_corpus("docs", seed=-3)
    with pytest.raises(DataError, match="integer"):
        load_corpus().train_blocks(2.5)
    with pytest.raises(DataError, match="1-D"):
        load_corpus().decode(torch.zeros(2, 2, dtype=torch.long))


# --------------------------------------------------------------------------------------------
# stdlib (cached)
# --------------------------------------------------------------------------------------------


def test_stdlib_corpus_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAUDIT_CACHE", str(tmp_path / "cache"))
    assert data_mod.default_cache_dir() == tmp_path / "cache"
    cold = load_corpus("stdlib")  # cache_dir defaults to $MEMAUDIT_CACHE
    files = sorted(p.name for p in (tmp_path / "cache" / "data").iterdir())
    assert any(f.startswith("stdlib-py") for f in files)
    assert any(f.startswith("tokenizer-") for f in files)
    assert any(f.startswith("ids-") for f in files)
    assert not any(f.endswith(".tmp") for f in files)
    assert cold.name == "stdlib" and cold.vocab_size == 512
    # ~1.7 MB of docstrings is roughly 600k tokens, i.e. thousands of 64-token blocks.
    assert cold.max_train > 5000 and 900 < cold.max_test <= 1024
    # The warm load is served from the cache: it extracts nothing, trains no tokenizer, encodes
    # nothing (a miss would write the entry back) -- checked by what it calls, not by its time.
    def not_on_a_warm_load(*args, **kwargs):
        raise AssertionError("the warm load recomputed a cached step")

    with monkeypatch.context() as m:
        m.setattr(data_sources, "_extract_stdlib_docstrings", not_on_a_warm_load)
        m.setattr(data_cache, "train_bpe_tokenizer", not_on_a_warm_load)
        m.setattr(data_cache.Cache, "_write", not_on_a_warm_load)
        warm = load_corpus("stdlib", cache_dir=tmp_path / "cache")
    assert warm.tokenizer.to_str() == cold.tokenizer.to_str()
    assert torch.equal(warm.train_blocks(warm.max_train), cold.train_blocks(cold.max_train))
    assert torch.equal(warm.test_blocks(warm.max_test), cold.test_blocks(cold.max_test))
    train_rows = _row_set(cold.train_blocks(cold.max_train))
    assert not (train_rows & _row_set(cold.test_blocks(cold.max_test)))
    assert torch.equal(cold.train_blocks(10), cold.train_blocks(1000)[:10])
    text = cold.decode(cold.train_blocks(50).ravel())
    assert "Return" in text or "return" in text
