"""The local process pool that runs sweep points: longest-first scheduling, one spawned worker per
point (single-threaded torch; on CUDA the processes share the GPU), deadlines read from an
injectable clock, fail-fast, and SweepView, the live Rich table of which point is running.

A point past the deadline stops training (SIGINT: train() saves, the point is evaluated as it is
and marked truncated); after the grace period its worker is killed.
"""
from __future__ import annotations

import os
import signal
import time
import traceback
from pathlib import Path
from typing import Callable

from .points import run_point
from .settings import SweepError, SweepSettings, settings_from_dict

FAIL_FAST = 3   # this many failures before any success stop a parallel sweep: something is broken


def worker_main(settings_dict: dict, out: str, n: int, queue, allow_truncated: bool) -> None:
    """Entry point of a worker process: one point, single-threaded torch."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MEMAUDIT_NO_PROGRESS", "1")
    # The deadline stops training with SIGINT. A sweep started in the background of a
    # non-interactive shell (nohup … &) inherits SIGINT ignored, and the worker would train on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = settings_from_dict(settings_dict)
    key = (settings.data, settings.preset, n)
    try:
        run_point(settings, Path(out), n, report=lambda phase, **info: queue.put(("phase", key, phase, info)),
                  allow_truncated=allow_truncated)
        queue.put(("done", key, None, {}))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        queue.put(("error", key, f"{type(e).__name__}: {e}", {"traceback": traceback.format_exc()}))

def job_cost(settings: SweepSettings, n: int) -> float:
    """Relative training cost of a point, for longest-first scheduling."""
    from ..model import PRESETS

    p = PRESETS[settings.preset]
    width = p["n_blocks"] * p["hidden_size"] / (3 * 128)
    return settings.schedule()[n] * max(1.0, width ** 0.5)

def schedule_order(jobs):
    """Longest first, alternating with the shortest: the long points start in the first wave (they
    set the makespan) while the cheap ones finish early, so a deadline never leaves a sweep
    without its small (memorizing) points."""
    by_cost = sorted(jobs, key=lambda j: (-job_cost(j[0], j[2]), j[0].data, j[0].preset, -j[2]))
    order = []
    lo, hi = 0, len(by_cost) - 1
    while lo <= hi:
        order.append(by_cost[lo])
        if lo != hi:
            order.append(by_cost[hi])
        lo, hi = lo + 1, hi - 1
    return order


def run_jobs(jobs, workers: int, view, started: float, deadline_s: float | None = None,
             grace_s: float = 60.0, clock: Callable[[], float] = time.perf_counter, backend=None):
    """Run points [(settings, out, n)] in `schedule_order`; in this process when workers ≤ 1, on
    `backend` (a memaudit.experiments.backends.TaskBackend: Ray) when one is given.

    The deadline (deadline_s after `started`) and the grace period after it are read from
    `clock` (default: the wall clock; `started` must come from the same clock); it is a feature
    of this pool (it stops a point's training with SIGINT), not of other backends.

    → (failed {key: message}, skipped [key]) with key = (data, preset, n)."""
    jobs = schedule_order(jobs)
    if backend is not None:
        if deadline_s is not None:
            raise SweepError(f"--deadline works with the local pool only, not with the {backend.name} backend")
        return run_point_tasks(jobs, backend, view), []
    failed: dict[tuple, str] = {}
    skipped: list[tuple] = []
    allow_truncated = deadline_s is not None
    if workers <= 1:
        for settings, out, n in jobs:
            key = (settings.data, settings.preset, n)
            if deadline_s is not None and clock() - started > deadline_s:
                skipped.append(key)
                view.phase(key, "skipped")
                continue
            try:
                run_point(settings, out, n, report=lambda phase, _k=key, **info: view.phase(_k, phase, **info),
                          allow_truncated=False)
            except (SweepError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - keep the other points
                failed[key] = f"{type(e).__name__}: {e}"
                view.phase(key, "failed", error=failed[key])
        return failed, skipped
    return _run_parallel(jobs, workers, view, started, deadline_s, grace_s, allow_truncated, clock)


def run_point_tasks(jobs, backend, view) -> dict[tuple, str]:
    """Points as tasks of a backend: each trains into its point directory and returns its report
    files, which this process (the driver) writes. → failed {key: message}."""
    from .backends import Task
    from .points import point_task, write_point_files

    keys = {}
    tasks = []
    for settings, out, n in jobs:
        key = (settings.data, settings.preset, n)
        name = f"{settings.data}·{settings.preset}·n={n}"
        keys[name] = key
        tasks.append(Task(key=name, function=point_task, args=(settings.to_dict(), str(out), n),
                          num_gpus=1 if settings.device.startswith("cuda") else 0))
    failed: dict[tuple, str] = {}

    def on_outcome(outcome) -> None:
        """On the driver, as each point arrives: write its files (a finished point survives an
        interrupted sweep) or record its failure."""
        key = keys[outcome.key]
        if outcome.ok:
            write_point_files(outcome.value["files"])
            doc = outcome.value["doc"]
            view.phase(key, "done", recovery=doc["recovery"]["verdict"], scan=doc["scan"]["verdict"])
        else:
            failed[key] = outcome.error

    backend.run(tasks, PointTaskView(view, keys), on_outcome=on_outcome)
    return failed


class PointTaskView:
    """A backend's task events shown in the sweep's view (SweepView): running, failed (a finished
    point is marked done once the driver has written its files)."""

    def __init__(self, view, keys: dict[str, tuple]):
        self.view, self.keys = view, keys

    def running(self, name: str) -> None:
        self.view.phase(self.keys[name], "running")

    def finished(self, outcome) -> None:
        if not outcome.ok:
            self.view.phase(self.keys[outcome.key], "failed", error=outcome.error)


def _run_parallel(jobs, workers, view, started, deadline_s, grace_s, allow_truncated, clock=time.perf_counter):
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    pending = list(jobs)
    running: dict[tuple, object] = {}
    failed: dict[tuple, str] = {}
    skipped: list[tuple] = []
    finished: set[tuple] = set()
    interrupted = False
    try:
        while pending or running:
            elapsed = clock() - started
            late = deadline_s is not None and elapsed > deadline_s
            while pending and len(running) < workers and not late:
                settings, out, n = pending.pop(0)
                key = (settings.data, settings.preset, n)
                proc = ctx.Process(target=worker_main, daemon=True,
                                   args=(settings.to_dict(), str(out), n, messages, allow_truncated))
                proc.start()
                running[key] = proc
                view.phase(key, "starting")
            if late and not interrupted:
                interrupted = True
                for settings, out, n in pending:
                    key = (settings.data, settings.preset, n)
                    skipped.append(key)
                    view.phase(key, "skipped (deadline)")
                pending = []
                for key, proc in running.items():
                    if proc.pid is not None and proc.is_alive():
                        os.kill(proc.pid, signal.SIGINT)   # train() stops, saves, the point is evaluated
                    view.phase(key, "deadline: stopping training")
            if interrupted and elapsed > deadline_s + grace_s:
                for key, proc in list(running.items()):
                    proc.terminate()
                    proc.join(timeout=10)
                    skipped.append(key)
                    view.phase(key, "killed after grace period")
                    running.pop(key)
                break
            try:
                _handle(messages.get(timeout=0.5), view, finished, failed)
            except queue_mod.Empty:
                pass
            if hasattr(view, "tick"):
                view.tick()
            if len(failed) >= min(FAIL_FAST, len(jobs)) and not finished:
                first = next(iter(failed.values()))
                raise SweepError(f"the first {len(failed)} points failed and none succeeded; stopping "
                                 f"(first error: {first})")
            for key, proc in list(running.items()):
                if key in finished or key in failed:
                    proc.join(timeout=30)
                    running.pop(key)
                elif not proc.is_alive():
                    proc.join()
                    _drain(messages, view, finished, failed)
                    if key not in finished and key not in failed:
                        failed[key] = f"worker exited with code {proc.exitcode}"
                        view.phase(key, "failed", error=failed[key])
                    running.pop(key)
    finally:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.join(timeout=10)
    return failed, skipped


def _drain(messages, view, finished, failed) -> None:
    import queue as queue_mod

    while True:
        try:
            _handle(messages.get(timeout=0.2), view, finished, failed)
        except queue_mod.Empty:
            return


def _handle(message, view, finished, failed) -> None:
    """One worker message: a phase change, a finished point or a failure."""
    kind, key, phase, info = message
    key = tuple(key)
    if kind == "phase":
        view.phase(key, phase, **info)
    elif kind == "done":
        finished.add(key)
    elif kind == "error":
        failed[key] = phase
        view.phase(key, "failed", error=phase)
class SweepView:
    """Which point is running: a live table on a TTY, one log line per phase change otherwise.

    sweeps: [(SweepSettings, reused sizes)]; points are keyed (data, preset, n_train)."""

    def __init__(self, sweeps, enabled: bool | None = None):
        from ..progress import interactive

        self.enabled = interactive() if enabled is None else enabled
        self.steps, self.status, self.info = {}, {}, {}
        for settings, reused in sweeps:
            schedule = settings.schedule()
            for n in settings.sizes:
                key = (settings.data, settings.preset, n)
                self.steps[key] = schedule[n]
                self.status[key] = "reused" if n in reused else "queued"
                self.info[key] = {}
        self.started: dict[tuple, float] = {}
        self.t0 = time.perf_counter()
        self.live = None
        self.ticker = None
        if not self.enabled:
            from .. import heartbeat

            self.ticker = heartbeat.Ticker() if heartbeat.active() else None

    def tick(self) -> None:
        """Without a terminal: a heartbeat line (points done, which are running, for how long)
        every MEMAUDIT_HEARTBEAT_S seconds (30) while points run."""
        if self.ticker is not None:
            self.ticker.tick(self._heartbeat)

    def _heartbeat(self) -> str:
        from ..heartbeat import duration

        now = time.perf_counter()
        finished = sum(1 for s in self.status.values() if s in ("done", "reused", "failed") or s.startswith("skipped"))
        running = [f"n_train={n} {self.status[(d, p, n)]} {duration(now - self.started[(d, p, n)])}"
                   for (d, p, n) in self.started if self.status[(d, p, n)] not in ("done", "failed")]
        return (f"memaudit: sweep {finished}/{len(self.status)} points finished · {duration(now - self.t0)} elapsed"
                + (f" · running: {', '.join(running)}" if running else ""))

    def __enter__(self):
        if self.enabled:
            from rich.live import Live

            from ..progress import console

            self.live = Live(self._render(), console=console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def phase(self, key: tuple, phase: str, **info) -> None:
        from ..progress import console

        if phase in ("starting", "training") and key not in self.started:
            self.started[key] = time.perf_counter()
        self.status[key] = phase
        self.info.setdefault(key, {}).update(info)
        if self.live is not None:
            self.live.update(self._render())
        else:
            elapsed = time.perf_counter() - self.t0
            extra = " ".join(f"{k}={v}" for k, v in info.items() if k != "traceback")
            data, preset, n = key
            console.print(f"[{elapsed:7.1f}s] {data}·{preset} n_train={n} ({self.steps.get(key)} steps): {phase} "
                          f"{extra}".rstrip(), highlight=False, soft_wrap=True)

    def _render(self):
        from rich.table import Table

        table = Table(title="memaudit sweep", expand=False)
        for col in ("data", "preset", "n_train", "steps", "status", "elapsed", "result"):
            table.add_column(col)
        now = time.perf_counter()
        for key, status in self.status.items():
            data, preset, n = key
            running = key in self.started and status not in ("done", "failed")
            el = f"{now - self.started[key]:.0f}s" if running else ""
            info = self.info.get(key, {})
            result = (f"recovery {info['recovery']} · scan {info['scan']}" if "recovery" in info
                      else info.get("error", ""))
            table.add_row(data, preset, str(n), str(self.steps[key]), status, el, result)
        return table

