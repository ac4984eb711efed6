"""The text tokenizer: local byte-level BPE with the ``<|eos|>`` document separator.

:func:`train_bpe_tokenizer` trains one deterministically; :func:`encode_documents` encodes
documents one by one, each followed by the separator; :func:`bytes_to_unicode` is byte-level
BPE's byte -> printable character table (for showing tokens).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|eos|>"
DEFAULT_TEXT_VOCAB = 512


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


def encode_documents(tokenizer: Tokenizer, documents: Sequence[str],
                     eos_id: int | None) -> np.ndarray:
    """All documents encoded one by one, each followed by ``eos_id`` (none when it is None),
    concatenated: int32 [n_tokens]."""
    encodings = tokenizer.encode_batch(documents, add_special_tokens=False)
    parts: list[np.ndarray] = []
    for enc in encodings:
        parts.append(np.asarray(enc.ids, dtype=np.int32))
        if eos_id is not None:
            parts.append(np.asarray([eos_id], dtype=np.int32))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)


def bytes_to_unicode() -> dict[int, str]:
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
