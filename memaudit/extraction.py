"""Evidence with training data: which generated samples are training copies, and the entropy gap.

An auditor who holds the training data (or a sample of it) can ask what a model gives away. This
module matches every generated sample against the training token stream and measures the paper's
entropy gap; `memaudit.probe.scan(..., train_data=...)` runs it after the data-free scan. It never
changes the scan's verdict or exit code.

The index (`TrainingIndex`). The training documents (examples) are concatenated into one token
stream, as released models pack text, so a copy may start at any offset, even inside one document
and run into the next. Every n-gram of the stream (n = `ngram_size(L)`: 4 … 8) is hashed with a
polynomial rolling hash in uint64 (numpy, wrapping arithmetic) and the hashes are sorted once
(O(M log M) for M stream tokens). A sample's L − n + 1 n-grams are looked up with `searchsorted`;
each hit (sample position i, stream position p) votes for the alignment a = p − i. Alignments are
then checked exactly against the stream — never all pairs:

    * every alignment with at least (L − n + 1) − k·n votes, where k = `near_copy_distance(L)`,
    * the `TOP_CANDIDATES` alignments with the most votes, and
    * the alignment holding the longest run of consecutive matching n-grams.

Guarantees (up to 64-bit hash collisions, which only add candidates that the exact check rejects):

    * near copies: a stream window within Hamming distance d of a sample keeps at least
      (L − n + 1) − d·n of its n-grams (a substitution breaks at most n of them), so every window
      with d ≤ k is checked whenever k < (L − n + 1)/n, which holds for the default k = ⌊0.1·L⌋ at
      every L ≥ 4. Exact and near copies are therefore found with precision and recall 1, and
      `nearest_train_distance` is exact whenever it is at most k;
    * above k it is the smallest Hamming distance among the checked alignments (an upper bound
      of the true nearest distance); null when the sample shares no n-gram with the stream (then
      every window differs in at least (L − n + 1)/n positions, by pigeonhole);
    * `longest_train_span`: the longest run of tokens of the sample that occurs verbatim in the
      stream, exact when it is at least n tokens long; shorter spans are a lower bound (0 when no
      n-gram of the sample occurs in the stream);
    * n-grams that occur more than `MAX_HITS_PER_NGRAM` times in the stream (padding,
      boilerplate) are not looked up; the report counts such lookups (`skipped_ngram_lookups`) and
      the guarantees hold for samples that have none.

The entropy gap (research/paper.md §3.5): the mean entropy of x̂ on training sequences against the
mean on generated samples, each with a bootstrap interval over sequences, and the gap
mean(samples) − mean(training) with its interval, at the rule's t_eval and at the paper's 1e-5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .stats import derive_seed, entropy_gap_statistics, extraction_statistics

NEAR_COPY_FRACTION = 0.1      # a near copy differs from a training window in at most ⌊0.1·L⌋ tokens
TOP_CANDIDATES = 8            # best-voted alignments checked exactly per sample
MAX_HITS_PER_NGRAM = 100_000  # more frequent n-grams are not looked up
HITS_PER_CHUNK = 4_000_000    # bounds memory: samples are matched in chunks of about this many hits
PAPER_T_EVAL = 1e-5           # the paper's evaluation time of the entropy gap
# what reports say about this evidence's random streams (t: repr of the evaluation time) and units
EVIDENCE_SEEDS = {"entropy_gap_train_subset": "numpy default_rng(derive_seed(seed, 'gap-train'))",
                  "entropy_gap_corruption": "derive_seed(seed, 'eval', 'gap-train-<t>' | 'gap-samples-<t>'); the "
                                            "samples at the scan's own times reuse its draws",
                  "entropy_gap_bootstrap": "derive_seed(derive_seed(seed, 'gap-bootstrap', t), 'train' | "
                                           "'samples' | 'gap')"}
EVIDENCE_UNITS = {"entropy": "nats", "distances and spans": "tokens", "rates": "fraction of samples"}

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def ngram_size(seq_len: int) -> int:
    """n of the index: 8 for L ≥ 64, L // 8 between (so that 0.1·L substitutions always leave
    enough clean n-grams), at least 4, never more than L."""
    return max(1, min(8, max(4, seq_len // 8), seq_len))


def near_copy_distance(seq_len: int) -> int:
    """The largest Hamming distance (tokens) at which a sample counts as a near copy: ⌊0.1·L⌋."""
    return int(math.floor(NEAR_COPY_FRACTION * seq_len))


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hashes (uint64, wrapping) of every n-gram along the last axis, mixed so that the
    high bits depend on every token. [..., M] → [..., M − n + 1] uint64."""
    x = np.asarray(tokens).astype(np.uint64)
    x += np.uint64(1)
    m = x.shape[-1] - n + 1
    h = np.zeros(x.shape[:-1] + (max(m, 0),), dtype=np.uint64)
    if m <= 0:
        return h
    with np.errstate(over="ignore"):          # wrapping uint64 arithmetic
        if n & (n - 1) == 0:                  # n a power of two: log2(n) passes, h_2w = h_w·B^w + h_w shifted by w
            h, spare, width, multiplier = x, np.empty_like(x), 1, _MULTIPLIER
            size = x.shape[-1]
            while width < n:
                size -= width
                np.multiply(h[..., :size], multiplier, out=spare[..., :size])
                np.add(spare[..., :size], h[..., width:width + size], out=spare[..., :size])
                h, spare, width, multiplier = spare, h, 2 * width, multiplier * multiplier
            h = h[..., :m]
        else:                                 # Horner: n passes
            for k in range(n):
                np.multiply(h, _MULTIPLIER, out=h)
                np.add(h, x[..., k:k + m], out=h)
        np.bitwise_xor(h, h >> np.uint64(31), out=h)
        np.multiply(h, _MIX, out=h)
        np.bitwise_xor(h, h >> np.uint64(29), out=h)
    return h


def longest_true_run(mask: np.ndarray) -> np.ndarray:
    """Length of the longest run of True in each row of a [R, L] bool array. → [R] int64."""
    rows, length = mask.shape
    padded = np.zeros((rows, length + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    r_start, c_start = np.nonzero(d == 1)
    _, c_end = np.nonzero(d == -1)        # row-major order pairs every start with its end
    best = np.zeros(rows, dtype=np.int64)
    np.maximum.at(best, r_start, c_end - c_start)
    return best


@dataclass
class Matches:
    """Per sample (arrays [N]): how it relates to the training stream. −1 means none."""

    is_training_copy: np.ndarray       # bool: equals a training window exactly
    is_near_copy: np.ndarray           # bool: within near_distance tokens of a training window
    nearest_train_id: np.ndarray       # int64: document (training example) where the nearest window starts
    nearest_train_offset: np.ndarray   # int64: token offset of that window inside the document
    nearest_train_distance: np.ndarray  # int64: Hamming distance (tokens) to it
    longest_train_span: np.ndarray     # int64: longest verbatim training span in the sample (tokens)
    nearest_train_tokens: np.ndarray   # [N, L] int64: the nearest training window (−1 where none)
    near_distance: int                 # the near-copy threshold used (tokens)
    skipped_ngram_lookups: int         # sample n-grams too frequent in the stream to look up


@dataclass
class TrainingIndex:
    """Sorted n-gram hashes of a packed training stream (see the module docstring).

    Each entry packs the high 64 − b bits of an n-gram's hash with its stream position in the low b
    bits (b = bits of M), so one plain sort orders hashes and carries positions along (much faster
    than an argsort, and no second array); hash values equal in their high bits match, and the
    exact check rejects the rare extra candidates that this truncation adds.
    """

    stream: np.ndarray        # [M] the documents, concatenated (int32 when the ids fit)
    doc_starts: np.ndarray    # [D] int64: where each document starts in the stream
    n: int
    keys: np.ndarray          # [M − n + 1] uint64, sorted: (hash >> b) << b | position
    position_bits: int        # b

    @classmethod
    def build(cls, documents, n: int) -> "TrainingIndex":
        """documents: a [D, L] integer array (one row per training example) or a list of 1-D arrays."""
        if isinstance(documents, np.ndarray) and documents.ndim == 2:
            lengths = np.full(documents.shape[0], documents.shape[1], dtype=np.int64)
            stream = np.ascontiguousarray(documents, dtype=np.int64).reshape(-1)
        else:
            docs = [np.asarray(d, dtype=np.int64).reshape(-1) for d in documents]
            lengths = np.array([d.size for d in docs], dtype=np.int64)
            stream = np.concatenate(docs) if docs else np.zeros(0, dtype=np.int64)
        doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if stream.size and 0 <= stream.min() and stream.max() < 2**31:
            stream = stream.astype(np.int32)
        keys = ngram_hashes(stream, n)
        bits = max(1, int(max(keys.size - 1, 1)).bit_length())
        if bits > 48:
            raise ValueError(f"training stream too long for the index ({stream.size:,} tokens)")
        shift = np.uint64(bits)
        np.right_shift(keys, shift, out=keys)
        np.left_shift(keys, shift, out=keys)
        np.bitwise_or(keys, np.arange(keys.size, dtype=np.uint64), out=keys)
        keys.sort()
        return cls(stream=stream, doc_starts=doc_starts, n=int(n), keys=keys, position_bits=bits)

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first index into `keys`, number of entries) of each n-gram hash."""
        shift = np.uint64(self.position_bits)
        high = (np.asarray(hashes, dtype=np.uint64) >> shift) << shift
        lo = np.searchsorted(self.keys, high, side="left")
        hi = np.searchsorted(self.keys, high | np.uint64((1 << self.position_bits) - 1), side="right")
        return lo, hi - lo

    def positions(self, entries: np.ndarray) -> np.ndarray:
        """Stream positions of entries of `keys`. → int64."""
        return (self.keys[entries] & np.uint64((1 << self.position_bits) - 1)).astype(np.int64)

    @property
    def n_documents(self) -> int:
        return int(self.doc_starts.size)

    @property
    def n_tokens(self) -> int:
        return int(self.stream.size)

    def match(self, samples, near_distance: int | None = None, top: int = TOP_CANDIDATES,
              max_hits_per_ngram: int = MAX_HITS_PER_NGRAM, hits_per_chunk: int = HITS_PER_CHUNK) -> Matches:
        """Match samples [N, L] against the stream (the module docstring says what is guaranteed)."""
        samples = np.ascontiguousarray(samples, dtype=np.int64)
        n_samples, length = samples.shape
        near = near_copy_distance(length) if near_distance is None else int(near_distance)
        best_dist = np.full(n_samples, length + 1, dtype=np.int64)
        best_pos = np.full(n_samples, -1, dtype=np.int64)
        best_span = np.zeros(n_samples, dtype=np.int64)
        skipped = 0
        if length >= self.n and self.stream.size >= self.n:
            lo, counts = self.lookup(ngram_hashes(samples, self.n))   # [N, Q] each
            too_common = counts > max_hits_per_ngram
            skipped = int(too_common.sum())
            counts[too_common] = 0
            cumulative = np.cumsum(counts.sum(axis=1))
            start = 0
            while start < n_samples:                                # chunks of ≈ hits_per_chunk hits
                before = int(cumulative[start - 1]) if start else 0
                stop = max(start + 1, int(np.searchsorted(cumulative, before + hits_per_chunk, side="right")))
                chunk = np.arange(start, stop)
                self._match_chunk(samples, chunk, lo[chunk], counts[chunk], near, top,
                                  best_dist, best_pos, best_span)
                start = stop
        found = best_pos >= 0
        doc = np.where(found, np.searchsorted(self.doc_starts, np.maximum(best_pos, 0), side="right") - 1, -1)
        offset = np.where(found, best_pos - self.doc_starts[np.maximum(doc, 0)], -1)
        window = np.full((n_samples, length), -1, dtype=np.int64)
        if found.any():
            window[found] = self.stream[best_pos[found, None] + np.arange(length)]
        dist = np.where(found, best_dist, -1)
        return Matches(is_training_copy=found & (dist == 0), is_near_copy=found & (dist <= near),
                       nearest_train_id=doc.astype(np.int64), nearest_train_offset=offset.astype(np.int64),
                       nearest_train_distance=dist, longest_train_span=best_span, nearest_train_tokens=window,
                       near_distance=near, skipped_ngram_lookups=skipped)

    # ------------------------------------------------------------------------------ internals
    def _match_chunk(self, samples, chunk, lo, counts, near, top, best_dist, best_pos, best_span) -> None:
        length = samples.shape[1]
        n_q = counts.shape[1]
        c, low = counts.reshape(-1), lo.reshape(-1)
        total = int(c.sum())
        if total == 0:
            return
        lookup = np.repeat(np.arange(c.size), c)
        within = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
        p = self.positions(low[lookup] + within)
        s = np.repeat(chunk, n_q)[lookup]
        i = np.tile(np.arange(n_q, dtype=np.int64), chunk.size)[lookup]
        width = self.stream.size + 2 * length
        key = s * width + (p - i + length)                          # (sample, alignment) in one int64
        order = np.lexsort((i, key))
        key, i = key[order], i[order]
        new_key = np.r_[True, key[1:] != key[:-1]]
        group = np.cumsum(new_key) - 1
        keys = key[new_key]
        votes = np.bincount(group)
        run_start = new_key | np.r_[True, i[1:] != i[:-1] + 1]
        run_len = np.bincount(np.cumsum(run_start) - 1)
        longest_run = np.zeros(keys.size, dtype=np.int64)
        np.maximum.at(longest_run, group[run_start], run_len)
        g_s, g_a = keys // width, keys % width - length

        chosen = votes >= max(1, n_q - near * self.n)                # every possible near copy
        by_votes = np.lexsort((g_a, -votes, g_s))
        first = np.r_[True, g_s[by_votes][1:] != g_s[by_votes][:-1]]
        rank = np.arange(keys.size) - np.maximum.accumulate(np.where(first, np.arange(keys.size), 0))
        chosen[by_votes[rank < top]] = True                          # the best-voted alignments
        by_run = np.lexsort((g_a, -longest_run, g_s))
        chosen[by_run[np.r_[True, g_s[by_run][1:] != g_s[by_run][:-1]]]] = True   # the longest run
        cs, ca = g_s[chosen], g_a[chosen]

        idx = ca[:, None] + np.arange(length)
        inside = (idx >= 0) & (idx < self.stream.size)
        equal = (self.stream[np.clip(idx, 0, self.stream.size - 1)] == samples[cs]) & inside
        span = longest_true_run(equal)
        np.maximum.at(best_span, cs, span)
        full = (ca >= 0) & (ca <= self.stream.size - length)
        dist = length - equal.sum(axis=1)
        cs, ca, dist = cs[full], ca[full], dist[full]
        best = np.lexsort((ca, dist, cs))                            # per sample: smallest distance, then position
        head = best[np.r_[True, cs[best][1:] != cs[best][:-1]]]
        better = dist[head] < best_dist[cs[head]]
        best_dist[cs[head][better]] = dist[head][better]
        best_pos[cs[head][better]] = ca[head][better]


# ----------------------------------------------------------------------------- the evidence
@dataclass
class TrainingEvidence:
    """The data evidence of one scan: matches per sample, statistics, where the data came from."""

    matches: Matches
    stats: dict                     # summary.json `training_data` (see `summary`)
    data: dict                      # where the training data came from
    index: dict                     # the index's settings and guarantees
    gap_train_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def summary(self) -> dict:
        return {"label": "evidence with training data: beside the data-free verdict, never changes it or the "
                         "exit code",
                "data": self.data, "index": self.index, "seeds": EVIDENCE_SEEDS, "units": EVIDENCE_UNITS,
                **self.stats}

    def provenance(self) -> dict:
        return {"data": self.data, "index": self.index, "seeds": EVIDENCE_SEEDS, "units": EVIDENCE_UNITS}



EntropyFn = Callable[[np.ndarray, float, str], np.ndarray]   # (tokens [N, L], t, stream) → H [N, L] nats


def training_evidence(samples: np.ndarray, documents: np.ndarray, data: dict, *, t_eval: float,
                      sample_entropy: dict[float, np.ndarray], entropy_fn: EntropyFn, seed: int,
                      resamples: int, confidence: float) -> TrainingEvidence:
    """Match `samples` [N, L] against `documents` [D, L] (the training examples) and measure the
    entropy gap at t_eval and at 1e-5. sample_entropy: the samples' entropies [N, L] already
    measured, by time; entropy_fn measures the others (training sequences: a seeded subset of
    min(N, D) examples)."""
    samples = np.asarray(samples, dtype=np.int64)
    documents = np.asarray(documents, dtype=np.int64)
    n_samples, length = samples.shape
    n = ngram_size(length)
    index = TrainingIndex.build(documents, n)
    matches = index.match(samples)
    stats = extraction_statistics(matches.is_training_copy, matches.is_near_copy, matches.longest_train_span,
                                  seq_len=length, confidence=confidence)
    rng = np.random.default_rng(derive_seed(seed, "gap-train"))
    k = min(n_samples, documents.shape[0])
    gap_ids = np.sort(rng.choice(documents.shape[0], size=k, replace=False)) if k < documents.shape[0] \
        else np.arange(documents.shape[0])
    gaps = []
    for t in dict.fromkeys([float(t_eval), PAPER_T_EVAL]):
        key = repr(t)
        h_samples = sample_entropy.get(t)
        if h_samples is None:
            h_samples = entropy_fn(samples, t, f"gap-samples-{key}")
        h_train = entropy_fn(documents[gap_ids], t, f"gap-train-{key}")
        gaps.append({"t": t, **entropy_gap_statistics(
            np.asarray(h_train, dtype=np.float64).mean(axis=1), np.asarray(h_samples, dtype=np.float64).mean(axis=1),
            resamples=resamples, confidence=confidence, seed=derive_seed(seed, "gap-bootstrap", key))})
    stats["entropy_gap"] = gaps
    stats["skipped_ngram_lookups"] = matches.skipped_ngram_lookups
    index_doc = {"ngram": n, "near_copy_fraction": NEAR_COPY_FRACTION, "near_copy_max_distance": matches.near_distance,
                 "distance": "Hamming distance in tokens against a window of L tokens at any offset of the packed "
                             "training stream",
                 "candidates_per_sample": TOP_CANDIDATES, "max_hits_per_ngram": MAX_HITS_PER_NGRAM,
                 "n_documents": index.n_documents, "n_tokens": index.n_tokens,
                 "entropy_gap_train_sequences": int(k),
                 "entropy_gap_selection": "seeded subset of the training examples (derive_seed(seed, 'gap-train'))"}
    return TrainingEvidence(matches=matches, stats=stats, data=data, index=index_doc, gap_train_ids=gap_ids)


def read_training_documents(spec, denoiser, seed: int = 0) -> tuple[np.ndarray, dict]:
    """All training examples named by `spec`, as `memaudit recover --train` reads them: 'auto'
    (native checkpoints: the model's training subset), a text file (tokenized with the checkpoint's
    tokenizer, cut into blocks of L tokens that are contiguous in the file's token stream), a
    .npy array of token ids [D, L], or an array. → (documents [D, L] int64, description)."""
    from .recovery import resolve_examples

    tokens, desc = resolve_examples(spec, denoiser, "train", n=2**62, seed=seed)
    desc = {**desc, "n_used": int(tokens.shape[0])}
    return tokens.numpy().astype(np.int64, copy=False), desc
