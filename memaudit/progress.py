"""Progress bars and console output: everything human-facing goes to stderr.

Bars are shown only when stderr is a terminal (never in CI logs or under --json), and NO_COLOR
is honoured by Rich itself.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console

from . import heartbeat
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# A log (stderr not a terminal) gets tables at their full width instead of Rich's 80 columns,
# unless COLUMNS says otherwise; a terminal keeps its own width.
LOG_WIDTH = 400


def _log_width() -> int | None:
    if sys.stderr is not None and sys.stderr.isatty() or os.environ.get("COLUMNS"):
        return None
    return LOG_WIDTH


console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None, width=_log_width())


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("MEMAUDIT_NO_PROGRESS")


def nested() -> bool | None:
    """show_progress for work nested under a live view (a sweep point, one of many scans): no bar
    of its own on a terminal (False), heartbeat lines elsewhere when they are on (None)."""
    return False if interactive() else None


class _NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, task_id):
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int = 1, **fields) -> None:
        self.progress.update(self.task_id, advance=n, **fields)

    def update(self, **fields) -> None:
        self.progress.update(self.task_id, **fields)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool | None = None, extra: str = "",
                 unit: str = ""):
    """Yields a task with .advance(n, **fields). `extra` is a Rich format string over task.fields,
    e.g. "loss {task.fields[loss]:.3f}". enabled=None: a bar on a terminal; elsewhere, when the CLI
    turned them on (memaudit.heartbeat), plain heartbeat lines and a line when the stage ends
    (`unit` names what is counted in their rate)."""
    if enabled is None:
        enabled = interactive()
        if not enabled and heartbeat.active():
            task = heartbeat.Heartbeat(description, total, unit=unit)
            yield task
            task.finish()
            return
    if not enabled:
        yield _NullTask()
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    if extra:
        columns.append(TextColumn(extra))
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Task(progress, progress.add_task(description, total=total, **_field_defaults(extra)))


def _field_defaults(extra: str) -> dict:
    import re

    return {name: 0.0 for name in re.findall(r"task\.fields\[(\w+)\]", extra)}
