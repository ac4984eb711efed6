"""Files memaudit writes: strict JSON, and report sets that change all at once or not at all.

A scan writes several files (summary.json, samples.parquet, tokens.parquet, report.html and,
on request, a JUnit and a Markdown file that may live elsewhere). A CI job reads them together, so
after any failure they must all be from the previous run or all from this one. `write_file_set`
does that with a small journal:

1. every new file is staged as `.NAME.memaudit-PID-RANDOM.tmp` beside its target;
2. every existing target is hard-linked (or copied) to `.NAME.memaudit-PID-RANDOM.old`;
3. the journal `.memaudit-commit-PID-RANDOM.json`, listing the targets, is written atomically
   into the first target's directory: this is the commit point;
4. the staged files are renamed over their targets; then the journal and the backups go.

A failure before step 3 removes the staged files and leaves every target untouched; a failure
during step 4 (a target that cannot be replaced) renames the backups back. A process killed at
any point (SIGKILL, power loss) leaves either no journal, and the old set intact, or a journal;
the next `write_file_set` into that directory (or `recover_file_sets`) rolls a journal forward and
removes memaudit's own leftovers. SIGINT is deferred during step 4, so Ctrl-C never splits a set.
memaudit never deletes a file it did not write: only names of the patterns above, whose writing
process is no longer alive, are cleaned up.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

TMP_RE = re.compile(r"^\.(?P<name>.+)\.memaudit-(?P<pid>\d+)-(?P<tag>[0-9a-f]{8})\.(?P<kind>tmp|old)$")
JOURNAL_RE = re.compile(r"^\.memaudit-commit-(?P<pid>\d+)-(?P<tag>[0-9a-f]{8})\.json(?P<partial>\.tmp)?$")

# Test hook: MEMAUDIT_TEST_KILL_AFTER=N[:SIGNAL] sends SIGNAL (default KILL) to this process after
# the N-th target of a file set has been renamed into place (N = 0: right after the commit point).
_KILL_HOOK = "MEMAUDIT_TEST_KILL_AFTER"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()   # what open() would give; mkstemp alone makes 0600 files


# ------------------------------------------------------------------------------------------ JSON
def finite_json(o: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """A copy of a JSON-able structure with NaN / ±inf replaced by None (strict JSON), numpy
    scalars and arrays as Python numbers and lists, paths as strings: the one JSON sanitiser.
    default: what an object of no JSON type becomes (e.g. str); None: a TypeError."""
    if isinstance(o, dict):
        return {k: finite_json(v, default) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_json(v, default) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, str):
        return o
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and not isinstance(o, (int, float)):   # numpy scalar or array
        return finite_json(o.tolist(), default)
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, int):
        return int(o)
    if default is not None:
        return default(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_text(document: Any, compact: bool = False, ensure_ascii: bool = False) -> str:
    """Strict JSON (no NaN / Infinity tokens), sorted keys: the one way memaudit writes JSON.
    compact: one line without spaces (Parquet metadata blobs); else indented by 2."""
    return json.dumps(finite_json(document), indent=None if compact else 2, sort_keys=True,
                      ensure_ascii=ensure_ascii, allow_nan=False,
                      separators=(",", ":") if compact else None)


def json_bytes(document: Any) -> bytes:
    return (json_text(document) + "\n").encode()


def write_stdout(text: str) -> None:
    """Write to stdout or raise OSError: a closed or broken stdout is a failure, never silent."""
    stream = sys.stdout
    if stream is None:
        raise OSError("stdout is closed")
    stream.write(text)
    stream.flush()


# ------------------------------------------------------------------------------------ file sets
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staged_name(target: Path, tag: str, kind: str) -> Path:
    return target.with_name(f".{target.name}.memaudit-{os.getpid()}-{tag}.{kind}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, FILE_MODE)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write one file so that readers see the old file or the new one, never half of one: staged
    beside the target under memaudit's temporary name (cleaned up after a kill by the next write
    into that directory), flushed to disk, renamed into place."""
    path = Path(path)
    check_writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staged_name(path, secrets.token_hex(4), "tmp")
    try:
        _write_new(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def _sigint_deferred():
    """Hold SIGINT until the block ends (main thread only), then deliver it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            signal.raise_signal(signal.SIGINT)


def _test_kill(done: int) -> None:
    spec = os.environ.get(_KILL_HOOK)
    if not spec:
        return
    count, _, name = spec.partition(":")
    if int(count) == done:
        signum = getattr(signal, f"SIG{name or 'KILL'}")
        if signum == signal.SIGINT:
            signal.raise_signal(signum)   # delivered when the deferral ends
        else:
            os.kill(os.getpid(), signum)


def recover_file_sets(directory: str | Path) -> None:
    """Finish or undo what a killed memaudit left in `directory`: roll committed journals forward,
    remove staged and backup files of dead processes. Never touches any other file."""
    directory = Path(directory)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        m = JOURNAL_RE.match(entry.name)
        if not m or not _dead_writer(int(m.group("pid"))):
            continue
        journal = Path(entry.path)
        if m.group("partial"):   # killed before the commit point: nothing was replaced
            journal.unlink(missing_ok=True)
            continue
        try:
            plan = json.loads(journal.read_text())
            pairs = [(Path(p["staged"]), Path(p["target"]), Path(p["backup"]) if p.get("backup") else None)
                     for p in plan["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue   # not ours after all, or unreadable: leave it
        for staged, target, backup in pairs:
            if staged.exists():
                os.replace(staged, target)
            if backup is not None:
                backup.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
    for entry in entries:
        m = TMP_RE.match(entry.name)
        if m and _dead_writer(int(m.group("pid"))):
            Path(entry.path).unlink(missing_ok=True)


def _dead_writer(pid: int) -> bool:
    return pid != os.getpid() and not _alive(pid)


def check_writable_target(path: str | Path) -> None:
    """Refuse, before any work, a target that exists and is not a regular file."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise IsADirectoryError(f"{path} exists and is not a regular file; memaudit will not replace it")


def write_file_set(files: dict[str | Path, bytes]) -> dict:
    """Write every file of `files` (path → bytes) so that readers see the old set or the new one.
    Returns {key as given: Path}. Raises OSError (after restoring the old set) on failure."""
    targets = [(key, Path(key)) for key in files]
    if not targets:
        return {}
    directories = []
    for _, target in targets:
        check_writable_target(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in directories:
            directories.append(target.parent)
    for directory in directories:
        recover_file_sets(directory)
    tag = secrets.token_hex(4)
    staged: list[tuple[Path, Path, Path | None]] = []
    journal = directories[0] / f".memaudit-commit-{os.getpid()}-{tag}.json"
    committed = False
    try:
        for (key, target) in targets:
            tmp = _staged_name(target, tag, "tmp")
            _write_new(tmp, files[key])
            backup = None
            if target.exists():
                backup = _staged_name(target, tag, "old")
                try:
                    os.link(target, backup)
                except OSError:
                    shutil.copy2(target, backup)
            staged.append((tmp, target, backup))
        plan = {"memaudit_file_set": 1,
                "files": [{"staged": str(t.resolve()), "target": str(g.resolve()),
                           "backup": str(b.resolve()) if b else None} for t, g, b in staged]}
        _write_new(journal.with_suffix(".json.tmp"), json_bytes(plan))
        with _sigint_deferred():
            os.replace(journal.with_suffix(".json.tmp"), journal)
            for directory in directories:
                _fsync_dir(directory)
            committed = True
            _test_kill(0)
            done = []
            try:
                for i, (tmp, target, _) in enumerate(staged, start=1):
                    os.replace(tmp, target)
                    done.append(i - 1)
                    _test_kill(i)
            except OSError:
                # Undo: put every replaced target back from its backup (or remove it if it is new).
                for j in done:
                    _, target, backup = staged[j]
                    if backup is not None:
                        os.replace(backup, target)
                    else:
                        target.unlink(missing_ok=True)
                journal.unlink(missing_ok=True)
                raise
            journal.unlink(missing_ok=True)
        return {key: target for key, target in targets}
    finally:
        for tmp, _, backup in staged:
            tmp.unlink(missing_ok=True)
            if backup is not None:
                backup.unlink(missing_ok=True)
        journal.with_suffix(".json.tmp").unlink(missing_ok=True)
        if not committed:
            journal.unlink(missing_ok=True)
