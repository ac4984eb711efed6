"""The `memaudit` console script (and `python -m memaudit`).

This module imports only the standard library, so that Ctrl-C keeps its contract from the first
line memaudit runs: while the heavy imports (typer, rich, torch, the memaudit modules) load, SIGINT
is held — an interrupt that lands inside an import could otherwise be swallowed by it, become an
ImportError or print a traceback — and acted on once they are done: one line, exit status 130.
From then on Ctrl-C raises KeyboardInterrupt, which the command layer maps to the same line and
status. Warnings of the libraries memaudit uses are not printed (the one-line stderr contract);
PYTHONWARNINGS or -W bring them back.
"""
from __future__ import annotations

import signal
import sys

_held: list[int] = []
if sys.argv and sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] in ("memaudit", "memaudit.exe", "__main__.py"):
    try:   # as early as the console script allows: Ctrl-C or SIGTERM from here on is held, never a traceback
        signal.signal(signal.SIGINT, lambda signum, frame: _held.append(signum))
        signal.signal(signal.SIGTERM, lambda signum, frame: _held.append(signum))
    except ValueError:   # imported outside the main thread
        pass

from .exit_codes import EXIT_INTERRUPTED, EXIT_RUNTIME, one_line  # noqa: E402 - after the handlers


class TolerantStream:
    """stderr that never fails the command: when it cannot be written (closed, /dev/full, a broken
    pipe) what is written is dropped (fd 2 then points at /dev/null), so the exit code and the
    --json document on stdout are the ones documented, whatever happens to stderr."""

    def __init__(self, stream):
        self._stream = stream

    def _drop(self) -> None:
        from .io import point_at_devnull

        point_at_devnull(2)

    def write(self, text):
        try:
            return self._stream.write(text)
        except (OSError, ValueError, AttributeError):
            self._drop()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except (OSError, ValueError, AttributeError):
            self._drop()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"memaudit: {one_line(message)}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _terminated(signum, frame):
    """SIGTERM (what CI runners send on a timeout) ends the run like Ctrl-C: one line, 130, and
    never inside a report commit (memaudit.io holds both signals while a set is renamed)."""
    raise KeyboardInterrupt("SIGTERM")


def main() -> None:
    held = _held
    can_hold = True
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    except ValueError:   # not the main thread: nothing to hold
        can_hold = False
    if sys.stderr is not None and not isinstance(sys.stderr, TolerantStream):
        sys.stderr = TolerantStream(sys.stderr)
    if not sys.warnoptions:
        import os
        import warnings

        warnings.simplefilter("ignore")
        # third-party lines on stderr (tokenizers' fork notice, Ray's start-up banner) are not ours
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    try:
        from . import cli

        cli.preload()
    except BaseException as e:  # noqa: BLE001 - an import that breaks is a one-line runtime failure
        if held:
            _say("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        text = one_line(e)
        _say(f"runtime failure: cannot start ({type(e).__name__}: {text})")
        sys.exit(EXIT_RUNTIME)
    if held:
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    if can_hold:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminated)
        if held:   # arrived between the check above and the handlers
            _say("interrupted")
            sys.exit(EXIT_INTERRUPTED)
    sys.exit(cli.app(prog_name="memaudit"))


if __name__ == "__main__":
    main()
