"""Where tasks run: one interface, `TaskBackend.run(tasks, view)`, with a local implementation (this
process) and a Ray implementation (a local Ray instance or an
existing cluster).

A task is a module-level function and its (picklable) arguments; it returns a value the driver
uses, and it never writes into the output directory (the driver writes every report file, so a
lost worker leaves no partial report). Whatever a task raises is caught where it ran and comes
back as a failed TaskOutcome with its exit code, from the one table of memaudit.exit_codes: 2 for
a usage error (e.g. a --batch-size that cannot fit), 4 when the checkpoint could not be loaded, 5
otherwise. A lost worker or node (killed process, node gone) is
retried up to `max_retries` times on Ray and then reported as failed with exit code 5; nothing is
dropped: `run` returns one outcome per task.

Each task on Ray runs with a pinned torch thread count (`Task.num_cpus`, 1 by default, as the
sweep pool's workers always did): Ray sets OMP_NUM_THREADS from the resources it grants, and a task's
numbers must not depend on where it ran (docs/distributed.md has the measurement).

Ray is imported only by RayBackend, so memaudit works without the `ray` extra.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import UsageError
from ..exit_codes import EXIT_RUNTIME, code_of
RAY_INSTALL_HINT = "pip install 'memaudit-dlm[ray]'"
DEFAULT_RETRIES = 2   # re-runs of a task whose worker or node was lost
VIEW_PENDING_ROWS = 8


@dataclass(frozen=True)
class Task:
    key: str                       # unique among the tasks of one run; names the task in views and tables
    function: Callable[..., Any]   # a module-level function (workers import it by name)
    args: tuple = ()
    num_cpus: int = 1              # also the torch thread count the task runs with
    num_gpus: float = 0


@dataclass
class TaskOutcome:
    key: str
    value: Any = None
    error: str | None = None       # one line; None when the task succeeded
    exit_code: int = 0             # 0 done, else memaudit.exit_codes: 2 usage, 4 could not load, 5 runtime/lost worker
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class BackendError(UsageError):
    """A backend could not be used as asked (no Ray installed, no cluster at the address): exit 2."""


def failure_of(e: BaseException) -> tuple[str, int]:
    """A task's exception as (one-line message, exit code): the same table as a single run's
    (memaudit.exit_codes.code_of), so a usage error is 2 and a load failure 4 on any backend."""
    return code_of(e)


def execute(function: Callable[..., Any], args: tuple, threads: int | None) -> tuple[str, Any, int]:
    """Run one task where it was scheduled → ("done", value, 0) or ("failed", message, exit code).
    threads: the torch thread count to pin (None: leave this process's)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:   # a worker process (on the driver, in-process tasks keep its settings)
        os.environ.setdefault("MEMAUDIT_NO_PROGRESS", "1")
        torch.set_num_threads(threads)
    try:
        return "done", function(*args), 0
    except Exception as e:  # noqa: BLE001 - every failure comes back as an outcome, never lost
        message, code = failure_of(e)
        return "failed", message, code
    finally:
        torch.set_num_threads(previous)


def outcome_from(key: str, result: tuple[str, Any, int], attempts: int = 1) -> TaskOutcome:
    kind, payload, code = result
    if kind == "done":
        return TaskOutcome(key, value=payload, attempts=attempts)
    return TaskOutcome(key, error=payload, exit_code=code, attempts=attempts)


class TaskBackend:
    """Runs tasks and returns {key: TaskOutcome}, one per task, in the tasks' order. on_outcome is
    called on the driver with each outcome as it arrives (the driver writes a finished task's
    files then, so an interrupted run keeps what finished)."""

    name = "backend"

    def run(self, tasks: Sequence[Task], view: "TaskView | None" = None,
            on_outcome: Callable[[TaskOutcome], None] | None = None) -> dict[str, TaskOutcome]:
        raise NotImplementedError

    @staticmethod
    def check_keys(tasks: Sequence[Task]) -> None:
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            raise ValueError("task keys must be unique")


class LocalBackend(TaskBackend):
    """This process, one task after another, with this process's thread count (a scan's numbers
    do not depend on it: docs/distributed.md). The sweep's local process pool, with its deadlines,
    is memaudit.experiments.pool."""

    name = "local"

    def run(self, tasks, view=None, on_outcome=None):
        self.check_keys(tasks)
        view = view or TaskView([t.key for t in tasks], enabled=False)
        outcomes = {}
        for task in tasks:
            view.running(task.key)
            outcomes[task.key] = outcome_from(task.key, execute(task.function, task.args, None))
            arrived(outcomes[task.key], view, on_outcome)
        return outcomes


class RayBackend(TaskBackend):
    """A Ray cluster: address "local" starts a Ray instance on this machine for the run (and stops
    it after); "auto" or "ray://host:port" joins an existing cluster. When Ray is already
    initialised in this process (a test, a notebook), that instance is used as it is.

    Every task is one Ray task with its declared resources (num_cpus, num_gpus). At most as many
    tasks as the cluster has CPUs (GPUs, for GPU tasks) are submitted at a time, so the view's
    'running' count is what the cluster runs and 'pending' what waits on the driver."""

    name = "ray"

    def __init__(self, address: str = "local", max_retries: int = DEFAULT_RETRIES, poll_s: float = 0.5):
        try:
            import ray
        except ImportError:
            raise BackendError(f"--ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
        self.ray, self.address, self.max_retries, self.poll_s = ray, address, int(max_retries), poll_s

    def _connect(self) -> bool:
        """Initialise Ray unless it already is; → whether this call started it."""
        if self.ray.is_initialized():
            return False
        import logging

        # Ray's own lines ("Started a local Ray instance", worker logs) never reach stderr: the one-line contract
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            self.ray.init(address=self.address, **kwargs)   # "local": a new instance on this machine
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendError(f"cannot connect to the Ray cluster at {self.address!r}: {' '.join(str(e).split())}"
                               ) from None
        return True

    def _capacity(self, task: Task) -> int:
        resources = self.ray.cluster_resources()
        if task.num_gpus:
            return max(1, int(resources.get("GPU", 0) / task.num_gpus))
        return max(1, int(resources.get("CPU", 1) / max(task.num_cpus, 1)))

    def run(self, tasks, view=None, on_outcome=None):
        self.check_keys(tasks)
        view = view or TaskView([t.key for t in tasks], enabled=False)
        ray = self.ray
        started_here = self._connect()
        try:
            if any(t.num_gpus for t in tasks) and not ray.cluster_resources().get("GPU"):
                # Ray would hold such tasks forever as infeasible
                raise BackendError("the tasks need a GPU (--device cuda) and the Ray cluster has none now")
            remote = ray.remote(execute)
            waiting = list(tasks)
            in_flight: dict[Any, Task] = {}
            outcomes: dict[str, TaskOutcome] = {}
            while waiting or in_flight:
                while waiting and len(in_flight) < self._capacity(waiting[0]):
                    task = waiting.pop(0)
                    ref = remote.options(num_cpus=task.num_cpus, num_gpus=task.num_gpus, max_retries=self.max_retries,
                                         retry_exceptions=False, name=task.key).remote(task.function, task.args,
                                                                                       task.num_cpus)
                    in_flight[ref] = task
                    view.running(task.key)
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.poll_s)
                for ref in done:
                    task = in_flight.pop(ref)
                    outcomes[task.key] = self._collect(ref, task)
                    arrived(outcomes[task.key], view, on_outcome)
            return {t.key: outcomes[t.key] for t in tasks}
        finally:
            if started_here:
                ray.shutdown()

    def _collect(self, ref, task: Task) -> TaskOutcome:
        try:
            return outcome_from(task.key, self.ray.get(ref))
        except self.ray.exceptions.RayError as e:
            errors = self.ray.exceptions
            text = " ".join(str(e).split())[:300]
            lost = (errors.WorkerCrashedError, errors.NodeDiedError, errors.ObjectLostError,
                    getattr(errors, "OutOfMemoryError", errors.WorkerCrashedError))   # killed by Ray's memory monitor
            if isinstance(e, lost):
                # the worker or its node was lost, every retry included
                message = f"runtime failure: worker lost ({type(e).__name__}) after {self.max_retries} retries: {text}"
                return TaskOutcome(task.key, error=message, exit_code=EXIT_RUNTIME, attempts=self.max_retries + 1)
            # Ray could not run the task at all (e.g. memaudit missing on a node): not retried by Ray
            return TaskOutcome(task.key, error=f"runtime failure: Ray could not run the task: {type(e).__name__}: "
                               f"{text}", exit_code=EXIT_RUNTIME)


def arrived(outcome: TaskOutcome, view, on_outcome) -> None:
    if on_outcome is not None:
        on_outcome(outcome)
    view.finished(outcome)


def make_backend(ray_address: str | None) -> TaskBackend:
    """The backend a command asked for: Ray when --ray was given (its address; "local" for a bare
    --ray), else this process."""
    return RayBackend(ray_address) if ray_address is not None else LocalBackend()


@dataclass
class TaskView:
    """Tasks pending / running / done / failed on the driver: a live Rich table on a TTY, one log
    line per finished task otherwise (memaudit.progress)."""

    keys: list[str]
    enabled: bool | None = None
    title: str = "memaudit tasks"
    status: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    log_failures: bool = True      # False: a failed task gets no log line (the caller reports it last)

    def __post_init__(self):
        from ..progress import interactive

        self.enabled = interactive() if self.enabled is None else self.enabled
        self.status = {k: "pending" for k in self.keys}
        self.live = None
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.enabled:
            from rich.live import Live

            from ..progress import console

            self.live = Live(self.render(), console=console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for v in self.status.values() if v == s) for s in ("pending", "running", "done", "failed")}

    def running(self, key: str) -> None:
        self.status[key] = "running"
        self._refresh()
        if self.live is None and self.enabled is False:
            from .. import heartbeat

            if heartbeat.active():   # a log: one line as each task starts, as one when it ends
                heartbeat.write_line(f"[{time.perf_counter() - self.t0:7.1f}s] {heartbeat.one_line(key)}: running")

    def finished(self, outcome: TaskOutcome) -> None:
        self.status[outcome.key] = "done" if outcome.ok else "failed"
        if not outcome.ok:
            self.errors[outcome.key] = outcome.error
        self._refresh(outcome)

    def _refresh(self, outcome: TaskOutcome | None = None) -> None:
        if self.live is not None:
            self.live.update(self.render())
        elif outcome is not None and (outcome.ok or self.log_failures):
            from rich.markup import escape

            from ..progress import console

            c = self.counts()
            state = "done" if outcome.ok else f"failed: {outcome.error}"
            console.print(f"[{time.perf_counter() - self.t0:7.1f}s] {escape(outcome.key)}: {escape(state)} "
                          f"({c['done']} done, {c['failed']} failed, {c['running']} running, {c['pending']} pending)",
                          highlight=False, soft_wrap=True)

    def render(self):
        from rich.table import Table

        c = self.counts()
        table = Table(title=f"{self.title} · {c['pending']} pending · {c['running']} running · {c['done']} done · "
                      f"{c['failed']} failed · {time.perf_counter() - self.t0:.0f} s", title_justify="left")
        table.add_column("task")
        table.add_column("status")
        # Long runs (hundreds of checkpoints) list what matters now: running and failed tasks, the
        # next pending ones; finished ones are counted in the title.
        shown = [k for k, s in self.status.items() if s in ("running", "failed")]
        pending = [k for k, s in self.status.items() if s == "pending"]
        shown += pending[:VIEW_PENDING_ROWS]
        for key in shown:
            status = self.status[key]
            table.add_row(key, status if status != "failed" else f"failed: {self.errors.get(key, '')}")
        if len(pending) > VIEW_PENDING_ROWS:
            table.add_row(f"… {len(pending) - VIEW_PENDING_ROWS} more", "pending")
        return table
