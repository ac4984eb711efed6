"""A checkpoint's tokenizer.json is untrusted input to a native library.

The `tokenizers` library (Rust) trusts its JSON: a fixed padding of 4·10⁹ tokens makes the first
`encode` allocate 16 GB (an allocation failure aborts the process, SIGABRT, no Python exception),
2⁶⁴−1 overflows a capacity and panics once per worker thread (a `PanicException`, a BaseException,
and a Rust backtrace on stderr for each). So, before the library sees a tokenizer:

* `check_tokenizer_json` parses it with `json` and checks every number that sizes something:
  padding (fixed length, `pad_to_multiple_of`) and truncation (`max_length`, `stride`) at most
  MAX_TOKENIZER_LENGTH, token ids and vocabulary sizes at most MAX_TOKENIZER_VOCAB, every integer
  within 32 bits, every number finite, nesting at most MAX_TOKENIZER_DEPTH levels;
* `tokenizer_from_json` builds the Tokenizer, turns padding and truncation **off** (memaudit
  concatenates whole documents into one token stream; a checkpoint's padding would insert pad
  tokens into the training text and its truncation would cut documents), and encodes and decodes a
  probe string, all inside `contained`: a panic of the native library becomes a LoadError (exit 4)
  and whatever the library prints on stderr meanwhile is swallowed, so the failure is one line.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from typing import Any

from . import LoadError

MAX_TOKENIZER_LENGTH = 1 << 16      # = memaudit.model.MAX_SEQ_LEN: no model memaudit loads is longer
MAX_TOKENIZER_VOCAB = 1 << 24       # 16.8 M token ids; the largest released vocabularies are ~0.26 M
MAX_TOKENIZER_INT = 1 << 32         # every id and size the library reads is a u32 or a usize
MAX_TOKENIZER_DEPTH = 64            # a real tokenizer.json nests 6 levels (sequences of normalizers)
PROBE_TEXT = "memaudit probe: Hello, world! 0123 \u00e9\u4e2d"


def _fail(source: str, message: str) -> LoadError:
    return LoadError(f"{source}: refusing the tokenizer: {message}")


def _walk_numbers(node: Any, source: str) -> None:
    """Every number in the document is finite and within 32 bits; nesting is bounded."""
    stack = [(node, "", 0)]
    while stack:
        cur, where, depth = stack.pop()
        if depth > MAX_TOKENIZER_DEPTH:
            raise _fail(source, f"nested more than {MAX_TOKENIZER_DEPTH} levels deep")
        if isinstance(cur, bool) or cur is None or isinstance(cur, str):
            continue
        if isinstance(cur, int):
            if not -MAX_TOKENIZER_INT < cur < MAX_TOKENIZER_INT:
                raise _fail(source, f"{where or 'a value'} = {cur} is outside the 32-bit range the library reads")
        elif isinstance(cur, float):
            if not math.isfinite(cur):
                raise _fail(source, f"{where or 'a value'} is not a finite number ({cur})")
        elif isinstance(cur, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in cur.items())
        elif isinstance(cur, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(cur))


def _bounded(value: Any, what: str, source: str, low: int, high: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(source, f"{what} must be an integer in [{low:,}, {high:,}], found {value!r:.40}")


def check_tokenizer_json(doc: Any, source: str) -> None:
    """LoadError (one line naming `source` and the field) unless the parsed tokenizer.json `doc`
    is within the bounds above. Nothing is allocated from the document's numbers."""
    if not isinstance(doc, dict):
        raise _fail(source, f"the top level is a {type(doc).__name__}, not a mapping")
    _walk_numbers(doc, source)
    padding = doc.get("padding")
    if padding is not None:
        if not isinstance(padding, dict):
            raise _fail(source, f"padding must be a mapping or null, found {type(padding).__name__}")
        strategy = padding.get("strategy")
        if isinstance(strategy, dict):
            _bounded(strategy.get("Fixed"), "padding.strategy.Fixed", source, 0, MAX_TOKENIZER_LENGTH, False)
        elif strategy not in (None, "BatchLongest"):
            raise _fail(source, f"padding.strategy must be BatchLongest or {{\"Fixed\": n}}, found {strategy!r:.40}")
        _bounded(padding.get("pad_to_multiple_of"), "padding.pad_to_multiple_of", source, 0, MAX_TOKENIZER_LENGTH)
        _bounded(padding.get("pad_id"), "padding.pad_id", source, 0, MAX_TOKENIZER_VOCAB)
        _bounded(padding.get("pad_type_id"), "padding.pad_type_id", source, 0, MAX_TOKENIZER_VOCAB)
    truncation = doc.get("truncation")
    if truncation is not None:
        if not isinstance(truncation, dict):
            raise _fail(source, f"truncation must be a mapping or null, found {type(truncation).__name__}")
        _bounded(truncation.get("max_length"), "truncation.max_length", source, 0, MAX_TOKENIZER_LENGTH)
        _bounded(truncation.get("stride"), "truncation.stride", source, 0, MAX_TOKENIZER_LENGTH)
    model = doc.get("model")
    if model is not None and not isinstance(model, dict):
        raise _fail(source, f"model must be a mapping, found {type(model).__name__}")
    vocab = (model or {}).get("vocab")
    if isinstance(vocab, (dict, list)) and len(vocab) > MAX_TOKENIZER_VOCAB:
        raise _fail(source, f"model.vocab has {len(vocab):,} entries, more than {MAX_TOKENIZER_VOCAB:,}")
    if isinstance(vocab, dict):
        for token, i in vocab.items():
            _bounded(i, f"the id of model.vocab[{token!r:.30}]", source, 0, MAX_TOKENIZER_VOCAB)
    added = doc.get("added_tokens") or []
    if not isinstance(added, list) or len(added) > MAX_TOKENIZER_VOCAB:
        raise _fail(source, "added_tokens must be a list of at most "
                            f"{MAX_TOKENIZER_VOCAB:,} tokens")
    for entry in added:
        if isinstance(entry, dict):
            _bounded(entry.get("id"), "added_tokens[].id", source, 0, MAX_TOKENIZER_VOCAB)


@contextlib.contextmanager
def contained(source: str):
    """Run a call into the native tokenizers library: its panics (pyo3's PanicException, a
    BaseException) and errors become one LoadError line, and what it writes to stderr (a Rust
    backtrace per panicking thread) is swallowed while the call runs."""
    try:
        saved = os.dup(2)
    except OSError:
        saved = None
    sink = tempfile.TemporaryFile() if saved is not None else None
    try:
        if sink is not None:
            os.dup2(sink.fileno(), 2)
        yield
    except (KeyboardInterrupt, SystemExit, LoadError, MemoryError):
        raise
    except BaseException as e:  # noqa: BLE001 - PanicException derives from BaseException
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "panicked" if type(e).__name__ == "PanicException" else "failed"
        raise LoadError(f"{source}: the tokenizers library {kind} on this tokenizer ({text[:200]})") from None
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        if sink is not None:
            sink.close()


def tokenizer_from_json(text: str, source: str):
    """A `tokenizers.Tokenizer` from untrusted tokenizer.json text: checked, built, with padding and
    truncation off, probed once; LoadError (one line) for anything the checks or the library
    refuse."""
    from tokenizers import Tokenizer

    try:
        doc = json.loads(text)
    except RecursionError:
        raise _fail(source, f"nested more than {MAX_TOKENIZER_DEPTH} levels deep") from None
    except ValueError as e:
        raise LoadError(f"{source}: unreadable tokenizer ({str(e).splitlines()[0]})") from None
    check_tokenizer_json(doc, source)
    del doc
    with contained(source):
        try:
            tok = Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise LoadError(f"{source}: unreadable tokenizer ({first[:200]})") from None
        return make_safe(tok, source)


def make_safe(tok, source: str):
    """Padding and truncation off, then one probe encode + decode (inside `contained` when called
    from tokenizer_from_json; callers holding a Tokenizer from elsewhere wrap it themselves)."""
    tok.no_padding()
    tok.no_truncation()
    ids = tok.encode(PROBE_TEXT, add_special_tokens=False).ids
    tok.decode(ids[:64], skip_special_tokens=False)
    return tok


def checked_backend(tok, source: str):
    """A Tokenizer obtained another way (transformers' backend_tokenizer): made safe under
    `contained`."""
    with contained(source):
        return make_safe(tok, source)


__all__ = ["MAX_TOKENIZER_LENGTH", "MAX_TOKENIZER_VOCAB", "check_tokenizer_json", "checked_backend", "contained",
           "tokenizer_from_json"]
