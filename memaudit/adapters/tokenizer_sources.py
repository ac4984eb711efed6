"""Where a checkpoint's tokenizer comes from: named by the user, found beside the checkpoint,
carried by it, or named by its config — and the record of which one it was.

Released checkpoints rarely ship a `tokenizer.json`: their configs *name* the tokenizer
(`data.tokenizer_name_or_path: bert-base-uncased`). The order (docs/formats.md, *Tokenizers*):

1. `--tokenizer NAME_OR_PATH` (a tokenizer.json file, a tokenizer folder, or a hub name);
2. the tokenizer the adapter read from the checkpoint itself (its `tokenizer.json`, or the pickled
   tokenizer of a Lightning file);
3. a tokenizer folder beside the checkpoint (`vocab.txt`, `vocab.json` + `merges.txt`,
   `tokenizer_config.json`, `special_tokens_map.json`, or a `tokenizer.json` next to a file);
4. the name in the checkpoint's config (`data.tokenizer_name_or_path`, `tokenizer_name_or_path`,
   `tokenizer_name`), resolved in the hub cache (online unless HF_HUB_OFFLINE is set).

Folders and hub names are read by `transformers.AutoTokenizer` (imported only then) and kept as the
`tokenizers.Tokenizer` behind it; a tokenizer.json file by `tokenizers` alone. A tokenizer's
vocabulary must fit the model's (common.check_tokenizer_vocab). A name found in a config that cannot
be resolved (offline, not cached) is a note, and the scan runs on token ids; a `--tokenizer` that
cannot be loaded is an error.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import LoadError
from .common import cfg_get, check_tokenizer_vocab, hub_provenance, quiet_transformers

# Files that make a folder a tokenizer folder, and the transformers tokenizer type each implies
# when no tokenizer_config.json says which class to build.
FOLDER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt")
CONFIG_NAME_KEYS = ("data.tokenizer_name_or_path", "tokenizer_name_or_path", "tokenizer_name")


def is_tokenizer_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in FOLDER_FILES)


def _tokenizer_type(folder: Path) -> str | None:
    """The tokenizer type a bare vocabulary implies: WordPiece vocab.txt → bert, BPE → gpt2."""
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return "gpt2"
    if (folder / "vocab.txt").is_file():
        return "bert"
    return None


def folder_tokenizer(folder: Path, trust_remote_code: bool):
    """The `tokenizers.Tokenizer` of a tokenizer folder, through transformers.AutoTokenizer (from
    local files only; the checkpoint's tokenizer code runs only with trust_remote_code)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise LoadError(f"{folder}: reading a tokenizer folder needs transformers "
                        f"(pip install 'memaudit-dlm[hub]')") from None
    attempts: list[dict] = []
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        attempts.append({})
    if _tokenizer_type(folder):
        attempts.append({"tokenizer_type": _tokenizer_type(folder)})
    if not attempts:
        raise LoadError(f"{folder}: no tokenizer files (tokenizer.json, tokenizer_config.json, vocab.txt, "
                        f"vocab.json + merges.txt)")
    if (folder / "tokenizer.json").is_file():   # transformers hands it to the tokenizers library unchecked
        from .native import load_tokenizer

        load_tokenizer(folder / "tokenizer.json")
    error = ""
    for kwargs in attempts:
        try:
            with quiet_transformers():
                tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                    trust_remote_code=trust_remote_code, **kwargs)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds; one line each
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "trust_remote_code" in error:
                raise LoadError(f"{folder}: its tokenizer needs its own code; memaudit runs it only with "
                                f"--trust-remote-code") from None
            continue
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise LoadError(f"{folder}: {type(tok).__name__} is not backed by a `tokenizers` tokenizer")
        from .tokenizer_json import checked_backend

        return checked_backend(backend, str(folder))
    raise LoadError(f"{folder}: unreadable tokenizer ({error})")


def load_named(name_or_path: str, trust_remote_code: bool) -> tuple[Any, dict]:
    """A tokenizer from a tokenizer.json file, a tokenizer folder or a hub name.
    → (tokenizers.Tokenizer, provenance {'kind', 'path', ['hub_id', 'revision']})."""
    path = Path(name_or_path).expanduser()
    if path.is_file() or (os.path.lexists(path) and not path.is_dir()):
        from .native import load_tokenizer

        return load_tokenizer(path), {"kind": "file", "path": str(path.resolve())}
    if path.is_dir():
        return folder_tokenizer(path, trust_remote_code), {"kind": "folder", "path": str(path.resolve()),
                                                           **hub_provenance(path)}
    from .hub import resolve_tokenizer_name

    snapshot = resolve_tokenizer_name(name_or_path, trust_remote_code)
    tok = folder_tokenizer(snapshot, trust_remote_code)
    hub = hub_provenance(snapshot)
    return tok, {"kind": "hub", "name": name_or_path, "path": str(snapshot), "hub_id": hub.get("hub_id", name_or_path),
                 "revision": hub.get("revision")}


def describe(record: dict) -> str:
    """One line for `tokenizer_source`: what it is, where it is, and who found it."""
    kind = record.get("kind")
    if kind == "hub":
        what = f"hub {record.get('hub_id')} @ {record.get('revision')}"
    elif kind in ("file", "folder"):
        what = f"{kind} {record.get('path')}" + (f" (hub {record['hub_id']} @ {record['revision']})"
                                                if record.get("hub_id") else "")
    elif kind == "checkpoint":
        what = f"in the checkpoint ({record.get('how')})"
    else:
        return str(record.get("how", "no tokenizer found"))
    return f"{what}; {record.get('found_by')}"


def attach_tokenizer(denoiser, checkpoint: Path, requested: str | None, trust_remote_code: bool) -> None:
    """Give `denoiser` its tokenizer by the order above and record where it came from in its
    provenance (`tokenizer`: the record, `tokenizer_source`: one line). LoadError when a tokenizer
    that was asked for or found cannot be read, or its vocabulary does not fit the model."""
    prov = denoiser.provenance
    source = str(checkpoint)
    record: dict | None = None
    tok = None
    declared_error = prov.pop("_tokenizer_error", None)   # adapters.native.DEFERRED_TOKENIZER_ERROR
    if declared_error is not None and not requested:
        raise LoadError(declared_error)
    if requested:
        tok, record = load_named(requested, trust_remote_code)
        record["found_by"] = "--tokenizer"
        if declared_error is not None:
            prov.setdefault("notes", []).append(f"the checkpoint's own tokenizer could not be used ({declared_error}); "
                                                "--tokenizer replaced it")
    elif denoiser.tokenizer is not None:
        own = checkpoint / "tokenizer.json" if checkpoint.is_dir() else None
        record = ({"kind": "file", "path": str(own.resolve()), "found_by": "the checkpoint's own tokenizer.json"}
                  if own is not None and own.is_file() else
                  {"kind": "checkpoint", "how": str(prov.get("tokenizer_source") or "stored with the weights"),
                   "found_by": "stored in the checkpoint"})
    else:
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        beside_json = folder / "tokenizer.json"
        if not checkpoint.is_dir() and beside_json.is_file():
            tok, record = load_named(str(beside_json), trust_remote_code)
            record["found_by"] = "tokenizer.json beside the checkpoint"
        elif is_tokenizer_folder(folder):
            tok, record = load_named(str(folder), trust_remote_code)
            record["found_by"] = "tokenizer files beside the checkpoint"
        else:
            key, name = next(((k, cfg_get(denoiser.config, k)) for k in CONFIG_NAME_KEYS
                              if isinstance(cfg_get(denoiser.config, k), str) and cfg_get(denoiser.config, k)),
                             (None, None))
            if name is not None:
                try:
                    tok, record = load_named(name, trust_remote_code)
                    record["found_by"] = f"named by the config ({key})"
                except LoadError as e:
                    prov.setdefault("notes", []).append(
                        f"the config names tokenizer {name!r} ({key}) but it could not be loaded ({e}); "
                        f"samples are shown as token ids (pass --tokenizer)")
                    record = {"kind": "none", "how": f"{name!r} named by {key} could not be loaded"}
    if record is None:
        record = {"kind": "none", "how": str(prov.get("tokenizer_source") or "no tokenizer found")}
    if tok is not None:
        check_tokenizer_vocab(tok, denoiser.vocab_size, source)
        denoiser.tokenizer = tok
    prov["tokenizer"] = record
    prov["tokenizer_source"] = describe(record)
