"""The synthetic source: a seeded first-order Markov chain whose true conditional entropies are
known exactly (:meth:`MarkovSource.conditional_entropy`), the reference for calibrating the
data-free probe.

Sequence ``i`` of a split depends only on ``(seed, split, i)``: sequences are generated in fixed
chunks of :data:`SYNTHETIC_CHUNK`, and test sequences differ from the first
:data:`SYNTHETIC_DISJOINT_HORIZON` training sequences.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DataError, check_int

DEFAULT_SYNTHETIC_SEQ_LEN = 32
DEFAULT_SYNTHETIC_VOCAB = 32
DEFAULT_N_SUCCESSORS = 8

# Synthetic sequences are generated in fixed chunks so that sequence i depends only on
# (seed, split, i) and never on how many sequences were requested.
SYNTHETIC_CHUNK = 4096
# Synthetic test sequences are guaranteed to differ from the first this-many train sequences.
# It is a fixed constant (not "the largest n asked for so far") so that test_blocks() is the same
# in every process, whatever was requested before.
SYNTHETIC_DISJOINT_HORIZON = 65536

_SPLIT_IDS = {"train": 1, "test": 2}
_PARAM_STREAM = 0  # rng stream id of the chain parameters; must differ from every split id


class MarkovSource:
    """A seeded first-order Markov chain over ``vocab_size`` symbols.

    Every token has ``n_successors`` distinct successor tokens with Dirichlet(1) transition
    weights; the initial distribution is uniform. Sparse successors make sequences highly
    structured (so small models can learn the chain) while the conditional entropy of a token
    given its neighbours stays finite (so the chain is not trivially memorizable).
    """

    def __init__(self, vocab_size: int = DEFAULT_SYNTHETIC_VOCAB,
                 n_successors: int = DEFAULT_N_SUCCESSORS, seed: int = 0) -> None:
        vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
        n_successors = check_int(n_successors, "n_successors", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
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
