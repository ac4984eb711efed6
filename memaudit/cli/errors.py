"""Exit codes and the one table from exceptions to them; the one-line error contract.

Exit codes (README "Exit codes", docs/exit-codes.md):
    0 generalizing / success · 1 memorizing (gate failed) · 2 usage error · 3 inconclusive ·
    4 checkpoint could not be resolved/loaded or unsupported family · 5 runtime failure ·
    130 interrupted
Every failure is one line on stderr, `memaudit: …`, usage errors included.
"""
from __future__ import annotations

import functools
import re
import sys

import typer
from typer.core import TyperGroup

from ..errors import UsageError
from ..progress import console

EXIT_OK = 0
EXIT_MEMORIZING = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_LOAD = 4
EXIT_RUNTIME = 5
EXIT_INTERRUPTED = 130


class OutputError(Exception):
    """stdout or a report location could not be written (exit code 5)."""


def one_line(text: object) -> str:
    """Checkpoint- or user-derived text made safe for the one-line contract: no line breaks."""
    return " ".join(str(text).replace("\r", "\n").split("\n")).strip()


def emit_error(message: str) -> None:
    """The single stderr line of a failure. The message is printed literally: paths, tensor names
    and exception texts may contain Rich markup such as `[/]` or `[red]`."""
    from rich.markup import escape

    console.print(f"[bold red]memaudit:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> None:
    emit_error(message)
    raise typer.Exit(code)


def exit_code_for(e: BaseException) -> tuple[str, int]:
    """The one table from exceptions to (message, exit code)."""
    from ..adapters import LoadError
    from ..denoiser import NonFiniteOutput

    if isinstance(e, LoadError):
        return str(e), EXIT_LOAD
    if isinstance(e, UsageError):   # and its kinds: ScanError, RecoveryError, SweepError, RuleError, DataError …
        return str(e), EXIT_USAGE
    if isinstance(e, NonFiniteOutput):
        return f"runtime failure: {e}", EXIT_RUNTIME
    if isinstance(e, OutputError):
        return str(e), EXIT_RUNTIME
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        # torch's allocator raises RuntimeError("[enforce fail at alloc_cpu.cpp] … DefaultCPUAllocator:
        # can't allocate memory …"): the documented line, not torch's text
        return "out of memory; lower --batch-size or --samples", EXIT_RUNTIME
    text = str(e).splitlines()[0] if str(e) else ""
    return f"runtime failure: {type(e).__name__}: {text}", EXIT_RUNTIME


def cli_errors(func):
    """Map every failure to one line on stderr and its documented exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - the contract is one line, whatever broke
            message, code = exit_code_for(e)
            fail(message, code)

    return wrapper


RAY_ADDRESS = re.compile(r"^(local|auto|[a-z]+://\S+|[\w.-]+:\d+)$")


def with_optional_values(args: list[str]) -> list[str]:
    """`--ray [ADDRESS]`: Typer has no option with an optional value, so a bare --ray (at the end,
    or before anything that is not a Ray address: local, auto, SCHEME://…, HOST:PORT) becomes
    `--ray local` before parsing."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or not RAY_ADDRESS.match(args[i + 1])):
            out.append("local")
    return out


class MemauditGroup(TyperGroup):
    """Typer's group with the parser's own errors (unknown option, missing argument, a value out
    of range …) as one line and exit 2. Typer vendors click in recent releases and uses click in
    older ones, so its exceptions are recognised by what they carry, not by their class."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = with_optional_values(list(sys.argv[1:] if args is None else args))
        try:
            code = super().main(args=args, prog_name="memaudit", complete_var=complete_var,
                                standalone_mode=False, **extra)
            code = code if isinstance(code, int) else EXIT_OK
        except KeyboardInterrupt:
            emit_error("interrupted")
            code = EXIT_INTERRUPTED
        except Exception as e:  # noqa: BLE001 - click/typer exceptions, by duck type
            if type(e).__name__ == "Abort":
                emit_error("interrupted")
                code = EXIT_INTERRUPTED
            elif not hasattr(e, "format_message"):
                message, code = exit_code_for(e)
                emit_error(message)
            elif getattr(e, "exit_code", 1) == EXIT_USAGE:
                ctx = getattr(e, "ctx", None)
                command = ctx.command_path if ctx is not None else "memaudit"
                message = "missing command" if type(e).__name__ == "NoArgsIsHelpError" else e.format_message()
                message = message[:1].lower() + message[1:]
                emit_error(f"usage: {message.rstrip('.')} (see {command} --help)")
                code = EXIT_USAGE
            else:
                emit_error(e.format_message())
                code = getattr(e, "exit_code", EXIT_RUNTIME) or EXIT_RUNTIME
        if standalone_mode:
            sys.exit(code)
        return code
