"""Files memaudit writes: strict JSON, and report sets that change all at once or not at all.

A scan writes several files (summary.json, samples.parquet, tokens.parquet, report.html and,
on request, a JUnit and a Markdown file that may live elsewhere). A CI job reads them together, so
after any failure they must all be from the previous run or all from this one. `write_file_set`
does that with a small journal:

1. the plan `.memaudit-commit-PID-RANDOM.json.tmp`, listing that directory's targets and the
   temporary names below, is written into every directory of the set;
2. every new file is staged as `.NAME.memaudit-PID-RANDOM.tmp` beside its target;
3. every existing target is hard-linked (or copied) to `.NAME.memaudit-PID-RANDOM.old`;
4. each plan is renamed to `.memaudit-commit-PID-RANDOM.json` (SIGINT and SIGTERM held): the commit
   point;
5. the staged files are renamed over their targets; then the journals and the backups go.

A failure before step 4 removes the staged files and leaves every target untouched; a failure
during step 5 (a target that cannot be replaced) renames the backups back. A process killed at
any point (SIGKILL, power loss) leaves a plan, and the old set intact, or a journal; the next
`write_file_set` into that directory (or `recover_file_sets`) rolls a journal forward, undoes a
plan, and removes the temporary files they name. SIGINT and SIGTERM are deferred during step 5.

Nothing in a report folder is trusted (docs/formats.md, "Safety model"): a journal is followed
only if it is a regular file naming files directly inside its own folder, each staged or backup
file under the temporary name of its target with the journal's pid and tag, and its writer is
dead; any other journal is ignored with a one-line warning. No file that a valid journal does
not name is removed, whatever its name.
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


def point_at_devnull(fd: int) -> None:
    """Make file descriptor fd (1 stdout, 2 stderr) write to /dev/null: after a failed write, so
    that nothing later (the interpreter's final flush included) fails on it again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass


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


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_JOURNAL_BYTES = 1 << 20


@contextmanager
def _sigint_deferred():
    """Hold SIGINT and SIGTERM until the block ends (main thread only), then deliver them: Ctrl-C
    and a CI runner's timeout never split a file set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in HELD_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _test_kill(done: int) -> None:
    spec = os.environ.get(_KILL_HOOK)
    if not spec:
        return
    count, _, name = spec.partition(":")
    if int(count) == done:
        signum = getattr(signal, f"SIG{name or 'KILL'}")
        if signum in HELD_SIGNALS:
            signal.raise_signal(signum)   # delivered when the deferral ends
        else:
            os.kill(os.getpid(), signum)


_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, `memaudit: warning: …`, once per message per process (never fails)."""
    if message in _warned:
        return
    _warned.add(message)
    from .exit_codes import one_line

    try:
        sys.stderr.write(f"memaudit: warning: {one_line(message)}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _journal_plan(directory: Path, entry: os.DirEntry, pid: str, tag: str) -> list | None:
    """The (staged, target, backup) triples of a journal that memaudit wrote for `directory`, or
    None. Nothing in a report folder is trusted: the journal must be a regular file (not a link),
    small, and name only files directly inside `directory` (after resolving links), each staged or
    backup file under memaudit's own temporary name for that target, pid and tag. A journal that
    fails any check is never followed."""
    try:
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            return None
        if entry.stat(follow_symlinks=False).st_size > MAX_JOURNAL_BYTES:
            return None
        plan = json.loads(Path(entry.path).read_text(encoding="utf-8"))
        if not isinstance(plan, dict) or plan.get("memaudit_file_set") != 1 or not isinstance(plan.get("files"), list):
            return None
        home = directory.resolve()
        triples = []
        for item in plan["files"]:
            target = _inside(home, item["target"])
            staged = _inside(home, item["staged"])
            backup = None if item.get("backup") is None else _inside(home, item["backup"])
            if target is None or staged is None or (item.get("backup") is not None and backup is None):
                return None
            if staged.name != f".{target.name}.memaudit-{pid}-{tag}.tmp":
                return None
            if backup is not None and backup.name != f".{target.name}.memaudit-{pid}-{tag}.old":
                return None
            triples.append((staged, target, backup))
        return triples
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def _inside(home: Path, text) -> Path | None:
    """`text` as a path directly inside `home` (no `..`, no link leading elsewhere), else None."""
    if not isinstance(text, str) or "\0" in text:
        return None
    path = Path(text)
    if not path.is_absolute() or ".." in path.parts or path.name in ("", ".", ".."):
        return None
    if path.parent.resolve() != home or path.is_symlink():
        return None
    return home / path.name


def recover_file_sets(directory: str | Path) -> None:
    """Finish or undo what a killed memaudit left in `directory`: roll its committed journals
    forward, remove the staged and backup files its journals name. A journal that memaudit did not
    write for this directory (see _journal_plan) is ignored with a warning, never followed; no file
    that no valid journal names is touched."""
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
        triples = _journal_plan(directory, entry, m.group("pid"), m.group("tag"))
        if triples is None:
            warn(f"ignored {journal}: not a memaudit journal for this folder (it names files elsewhere or "
                 "is not a regular file); nothing was replayed")
            continue
        for staged, target, backup in triples:
            if m.group("partial"):   # killed before the commit point: nothing was replaced
                staged.unlink(missing_ok=True)
            elif staged.is_file() and not staged.is_symlink():
                os.replace(staged, target)
            if backup is not None and backup.is_file() and not backup.is_symlink():
                backup.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)


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
    directories: list[Path] = []
    for _, target in targets:
        check_writable_target(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.resolve() not in [d.resolve() for d in directories]:
            directories.append(target.parent)
    for directory in directories:
        recover_file_sets(directory)
    tag = secrets.token_hex(4)
    pid = os.getpid()
    # One journal per directory, naming only that directory's files (a journal is never trusted
    # with a path outside its own folder). The plan is on disk before the first staged file, so a
    # kill at any moment leaves nothing that no journal names.
    journals = {d.resolve(): d / f".memaudit-commit-{pid}-{tag}.json" for d in directories}
    planned = [(_staged_name(t, tag, "tmp"), t, _staged_name(t, tag, "old")) for _, t in targets]

    def plan_of(directory: Path, with_backups) -> bytes:
        return json_bytes({"memaudit_file_set": 1, "files": [
            {"staged": str(s.parent.resolve() / s.name), "target": str(g.parent.resolve() / g.name),
             "backup": (str(b.parent.resolve() / b.name) if b is not None else None)}
            for s, g, b in with_backups if g.parent.resolve() == directory]})

    staged: list[tuple[Path, Path, Path | None]] = []
    committed = False
    try:
        for directory, journal in journals.items():
            _write_new(journal.with_suffix(".json.tmp"), plan_of(directory, planned))
        for (key, target), (tmp, _, old) in zip(targets, planned):
            try:
                _write_new(tmp, files[key])
            except OSError as e:   # name the file the user knows (e.g. "File too large: …/samples.parquet")
                raise OSError(e.errno, e.strerror or str(e), str(target)) from None
            backup = None
            if target.exists():
                backup = old
                try:
                    os.link(target, backup)
                except OSError:
                    shutil.copy2(target, backup)
            staged.append((tmp, target, backup))
        for directory, journal in journals.items():
            tmp_journal = journal.with_suffix(".json.tmp")
            tmp_journal.unlink(missing_ok=True)
            _write_new(tmp_journal, plan_of(directory, staged))
        with _sigint_deferred():
            for journal in journals.values():   # the commit point (one rename per folder, signals held)
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
                for journal in journals.values():
                    journal.unlink(missing_ok=True)
                raise
            for journal in journals.values():
                journal.unlink(missing_ok=True)
        return {key: target for key, target in targets}
    finally:
        for tmp, _, backup in staged:
            tmp.unlink(missing_ok=True)
            if backup is not None:
                backup.unlink(missing_ok=True)
        for journal in journals.values():
            journal.with_suffix(".json.tmp").unlink(missing_ok=True)
            if not committed:
                journal.unlink(missing_ok=True)
        if not committed:
            for tmp, _, _ in planned:
                tmp.unlink(missing_ok=True)
