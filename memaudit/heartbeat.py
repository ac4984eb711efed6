"""Progress as plain log lines, for stderr that is not a terminal (CI logs, `| tee`, nohup).

A terminal gets Rich's live progress bar (memaudit.progress). Anything else gets, from the command
line, what that bar shows as text: a heartbeat line at a fixed interval while a stage runs, and
one line when it ends:

    memaudit: training 120/2000 (6%) · 4.0 steps/s · ETA 7m50s · loss 2.8110 · tok_s 8190
    memaudit: training done: 2000/2000 in 8m20s (4.0 steps/s) · loss 1.0223 · tok_s 8190

The interval is 30 s, or MEMAUDIT_HEARTBEAT_S seconds (0: a line at every advance; tests use it);
the clock is injectable. Lines are plain text (no markup, no colour) and never wrapped.
Python API calls stay quiet unless `enable()` was called (the CLI does); MEMAUDIT_NO_PROGRESS
(set in worker processes) silences them.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable

DEFAULT_INTERVAL_S = 30.0
INTERVAL_ENV = "MEMAUDIT_HEARTBEAT_S"
_enabled = False


def enable(on: bool = True) -> None:
    """Plain progress lines for the rest of this process when stderr is not a terminal (the CLI)."""
    global _enabled
    _enabled = on


def active() -> bool:
    return _enabled and not os.environ.get("MEMAUDIT_NO_PROGRESS")


def interval_s() -> float:
    """Seconds between heartbeat lines: MEMAUDIT_HEARTBEAT_S, else 30."""
    raw = os.environ.get(INTERVAL_ENV)
    try:
        value = float(raw) if raw not in (None, "") else DEFAULT_INTERVAL_S
    except ValueError:
        value = DEFAULT_INTERVAL_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL_S


def duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"


def write_line(text: str) -> None:
    """One plain line on stderr (looked up at each call, so a redirected stderr gets it)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text.replace("\n", " ") + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _field(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


class Heartbeat:
    """A progress task (.advance(n, **fields), .update(**fields)) that logs plain lines."""

    def __init__(self, stage: str, total: int | None, unit: str = "", clock: Callable[[], float] = time.monotonic,
                 interval: float | None = None, write: Callable[[str], None] = write_line):
        self.stage, self.total, self.unit = stage, total, unit
        self.clock, self.write = clock, write
        self.interval = interval_s() if interval is None else float(interval)
        self.done, self.fields = 0, {}
        self.started = self.last = clock()

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        self.fields.update(fields)
        self.maybe_beat()

    def update(self, **fields) -> None:
        self.fields.update(fields)
        self.maybe_beat()

    def maybe_beat(self) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(self.line(now))

    def _rate(self, now: float) -> float:
        elapsed = now - self.started
        return self.done / elapsed if elapsed > 0 else math.nan

    def _units(self) -> str:
        return f" {self.unit}/s" if self.unit else "/s"

    def _extra(self) -> str:
        return "".join(f" · {k} {_field(v)}" for k, v in self.fields.items())

    def line(self, now: float) -> str:
        rate = self._rate(now)
        parts = [f"memaudit: {self.stage} {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} ({self.done / self.total:.0%})"
        if math.isfinite(rate):
            parts.append(f"{rate:,.1f}{self._units()}")
            if self.total and rate > 0:
                parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        parts.append(f"{duration(now - self.started)} elapsed")
        return " · ".join(parts) + self._extra()

    def finish(self) -> None:
        now = self.clock()
        rate = self._rate(now)
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        speed = f" ({rate:,.1f}{self._units()})" if math.isfinite(rate) else ""
        self.write(f"memaudit: {self.stage} done: {count} in {duration(now - self.started)}{speed}{self._extra()}")


class Ticker:
    """A heartbeat for loops that wait on others (sweep, calibrate): `tick(describe)` writes
    describe() when the interval has passed since the last line."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float | None = None,
                 write: Callable[[str], None] = write_line):
        self.clock, self.write = clock, write
        self.interval = interval_s() if interval is None else float(interval)
        self.last = clock()

    def tick(self, describe: Callable[[], str]) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(describe())
