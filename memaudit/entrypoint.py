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

EXIT_RUNTIME = 5
EXIT_INTERRUPTED = 130


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"memaudit: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def main() -> None:
    held: list[int] = []
    can_hold = True
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:   # not the main thread: nothing to hold
        can_hold = False
    if not sys.warnoptions:
        import warnings

        warnings.simplefilter("ignore")
    try:
        from . import cli

        cli.preload()
    except BaseException as e:  # noqa: BLE001 - an import that breaks is a one-line runtime failure
        if held:
            _say("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        text = str(e).splitlines()[0] if str(e) else ""
        _say(f"runtime failure: cannot start ({type(e).__name__}: {text})")
        sys.exit(EXIT_RUNTIME)
    if held:
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    if can_hold:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(cli.app(prog_name="memaudit"))


if __name__ == "__main__":
    main()
