"""Deterministic fake denoisers for the stored-subset and canary tests: an associative memory that
holds a few sequences (x̂ at a position points to the stored sequence that agrees best with the
rest of the input, when it agrees on enough of it) over a background language with finite entropy."""
from __future__ import annotations

import torch

from memaudit.diffusion import LogLinearSchedule


class MemoryDenoiser:
    family = "fake-memory"
    precision = "float32"
    time_input = "sigma"

    def __init__(self, stored, vocab_size: int, seq_len: int, tokenizer=None, match: float = 0.6,
                 confidence: float = 0.97, background: float = 0.5):
        self.stored = torch.as_tensor(stored, dtype=torch.int64).reshape(-1, seq_len) if len(stored) else \
            torch.zeros((0, seq_len), dtype=torch.int64)
        self.vocab_size, self.seq_len, self.tokenizer = vocab_size, seq_len, tokenizer
        self.schedule = LogLinearSchedule()
        self.match, self.confidence, self.background = match, confidence, background
        self.device = torch.device("cpu")
        self.calls = 0

    def __call__(self, tokens, t):
        self.calls += 1
        x = torch.as_tensor(tokens, dtype=torch.int64)
        b, length = x.shape
        v = self.vocab_size
        # Background language: the next token is (previous + 1) mod V with probability `background`.
        probs = torch.full((b, length, v), (1 - self.background) / v)
        prev = torch.roll(x, 1, dims=1)
        probs.scatter_add_(-1, ((prev + 1) % v)[..., None], torch.full((b, length, 1), self.background))
        if len(self.stored):
            agree = (x[:, None, :] == self.stored[None]).float()                 # [B, K, L]
            others = agree.sum(-1, keepdim=True) - agree                          # agreement off position i
            best, which = others.max(1)                                           # [B, L]
            hit = best / max(1, length - 1) >= self.match
            target = self.stored[which, torch.arange(length)[None].expand(b, length)]
            peaked = torch.full((b, length, v), (1 - self.confidence) / (v - 1))
            peaked.scatter_(-1, target[..., None], self.confidence)
            probs = torch.where(hit[..., None], peaked, probs)
        return probs.log()

    def decode(self, ids):
        return None if self.tokenizer is None else self.tokenizer.decode([int(i) for i in ids])

    def describe(self) -> dict:
        return {"family": self.family, "vocab_size": self.vocab_size, "seq_len": self.seq_len}
