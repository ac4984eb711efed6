"""Reusing a finished checkpoint report of a multi-checkpoint scan (`scan --resume`), without
trusting the report folder.

A report folder is a shared artefact: anyone who can write it can edit summary.json, replace a
Parquet file or forge the file hashes a summary records. So nothing read from the folder decides
whether a report is reused. When a checkpoint has been scanned with --resume, the driver writes a
*ledger* entry outside the folder, in this user's cache ($MEMAUDIT_CACHE/resume/, a file only its
owner can write): the checkpoint's path and the SHA-256 of **every** file under it (not the list a
summary records), the settings, the rule, the weights, the verdict, and the SHA-256 of each report
file as written. A later --resume run reuses the report only if

* a ledger entry exists for this report directory, owned by this user and writable by no one else;
* the checkpoint, settings, rule and weights are the requested ones;
* every file under the checkpoint, hashed now, is the one recorded (no file added, removed or
  changed), and every report file, hashed now, is the one written;

else the checkpoint is scanned again. The verdict and exit code of a reused report are therefore
those of the scan that wrote it; editing the folder can only cause a re-scan.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

LEDGER_VERSION = 1
MAX_CHECKPOINT_FILES = 100_000
MAX_LEDGER_BYTES = 16 << 20


def ledger_dir() -> Path:
    from ..data import default_cache_dir

    return default_cache_dir() / "resume"


def ledger_path(report_dir: Path) -> Path:
    key = hashlib.sha256(str(Path(report_dir).resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return ledger_dir() / f"{key}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def checkpoint_hashes(checkpoint: str | Path) -> dict[str, str] | None:
    """{path relative to the checkpoint: SHA-256} of every regular file under it (links followed
    to their content, directories walked without following links), or None when it cannot be
    read in full."""
    root = Path(checkpoint).resolve()
    try:
        if root.is_file():
            return {root.name: _sha256(root)}
        found: dict[str, str] = {}
        for directory, subdirs, names in os.walk(root, followlinks=False):
            subdirs.sort()
            for name in sorted(names):
                path = Path(directory) / name
                if not path.is_file():
                    return None   # a FIFO, socket, dangling link …: never reused
                found[str(path.relative_to(root))] = _sha256(path)
                if len(found) > MAX_CHECKPOINT_FILES:
                    return None
        return found
    except (OSError, ValueError):
        return None


def report_hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def record(report_dir: Path, checkpoint: str, settings: dict, rule: dict, weights: str | None,
           verdict: str, files: dict[str, bytes], hashes: dict[str, str] | None = None) -> None:
    """Write the ledger entry of a report just written into report_dir (best effort: a ledger
    that cannot be written only means the next --resume run scans again)."""
    from ..io import atomic_write_bytes, json_bytes

    hashes = hashes if hashes is not None else checkpoint_hashes(checkpoint)
    if hashes is None:
        return
    entry = {"memaudit_resume": LEDGER_VERSION, "report_dir": str(Path(report_dir).resolve()),
             "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_files": hashes, "settings": settings,
             "rule": rule, "weights": weights, "verdict": verdict, "reports": report_hashes(files)}
    try:
        directory = ledger_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(ledger_path(report_dir), json_bytes(entry))
    except OSError:
        pass


def _read_ledger(path: Path) -> dict | None:
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LEDGER_BYTES:
            return None
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            return None   # written by someone else, or writable by others: not this user's record
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) and entry.get("memaudit_resume") == LEDGER_VERSION else None


def verified_report(report_dir: Path, checkpoint: str, settings: dict, rule: dict, weights: str | None,
                    same_settings) -> dict | None:
    """The summary of the report in report_dir when the ledger vouches for it and the checkpoint
    and every report file are unchanged (see the module docstring), else None (scan again)."""
    from ..report import REPORT_FILES

    entry = _read_ledger(ledger_path(report_dir))
    if entry is None or not Path(checkpoint).exists():
        return None
    if entry.get("report_dir") != str(Path(report_dir).resolve()):
        return None
    if entry.get("checkpoint") != str(Path(checkpoint).resolve()) or entry.get("weights") != weights:
        return None
    if entry.get("rule") != rule or not same_settings(entry.get("settings") or {}, settings):
        return None
    recorded = entry.get("reports") or {}
    if sorted(recorded) != sorted(REPORT_FILES):
        return None
    contents = {}
    for name in REPORT_FILES:
        path = Path(report_dir) / name
        try:
            if path.is_symlink() or not path.is_file():
                return None
            contents[name] = path.read_bytes()
        except OSError:
            return None
    if report_hashes(contents) != recorded:
        return None
    if checkpoint_hashes(checkpoint) != entry.get("checkpoint_files"):
        return None
    try:
        summary = json.loads(contents["summary.json"].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(summary, dict) or summary.get("verdict") != entry.get("verdict"):
        return None
    return summary
