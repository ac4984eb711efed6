"""How many CPU threads torch uses, chosen by the work (docs/performance.md, "Threads").

Measured (benchmarks/bench_threads.py, 2-core AMD EPYC, torch 2.13.0+cpu): idle, a nano model trains
at 14,878 tokens/s on 1 thread and 24,542 on 2 (micro 5,853 / 9,760; scans alike) — the second
core pays even at this size; with both cores busy with other work (load ≈ 10), nano trains at 4,892
tokens/s on 1 thread and 527 on 2, because a thread that waits for a busy core stalls every operation
of a small network. So what decides is how many cores are free, and a small model suffers most from
asking for a busy one: a model under SMALL_MODEL_PARAMETERS runs on the cores the 1-minute load
average leaves free (at least 1, at most torch's default); a larger one keeps torch's default.

Who decides, first match wins:
    --threads N (or MEMAUDIT_THREADS=N)      the user
    OMP_NUM_THREADS / MKL_NUM_THREADS set    the user, through the environment: left alone
    the model's size and the machine's load  small: the free cores; larger: torch's default

Only the command line applies it (`enable`); the Python API leaves torch's setting alone. A
report never depends on the thread count.
"""
from __future__ import annotations

import os

SMALL_MODEL_PARAMETERS = 2_000_000   # the nano preset (0.8 M at V 32); micro is 2.3 M there
ENV = "MEMAUDIT_THREADS"
_enabled = False
_requested: int | None = None


def enable(requested: int | None = None) -> None:
    """Let commands pick the thread count (the CLI); requested: --threads N."""
    global _enabled, _requested
    _enabled = True
    if requested is not None and requested < 1:
        from .errors import UsageError

        raise UsageError(f"--threads must be ≥ 1 (got {requested})")
    _requested = None if requested is None else int(requested)   # each command starts afresh


def requested() -> int | None:
    if _requested is not None:
        return _requested
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value >= 1:
            return value
        from .errors import UsageError

        raise UsageError(f"{ENV} must be a whole number ≥ 1 (got {raw!r})")
    return None


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores the 1-minute load average leaves free (≥ 1); cores: usable CPUs, load: the average
    (both read from the machine when None)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, int(cores) - int(round(load)))


def choose(n_parameters: int | None, cores: int | None = None, load: float | None = None,
           default: int | None = None) -> int | None:
    """The thread count for a model of n_parameters (None: leave torch's as it is); cores, load and
    default (torch's thread count) are read from the machine when None."""
    wanted = requested()
    if wanted is not None:
        return wanted
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    if n_parameters is not None and n_parameters < SMALL_MODEL_PARAMETERS:
        if default is None:
            import torch

            default = torch.get_num_threads()
        return min(int(default), free_cores(cores, load))
    return None


def apply(n_parameters: int | None) -> int:
    """Set torch's thread count for this model when the CLI enabled it; → the count in use."""
    import torch

    if _enabled:
        chosen = choose(n_parameters)
        if chosen is not None and chosen != torch.get_num_threads():
            torch.set_num_threads(chosen)
    return torch.get_num_threads()


def parameters_of(denoiser) -> int | None:
    """The number of parameters of a Denoiser's network (None when it has no torch module)."""
    try:
        return int(sum(p.numel() for p in denoiser.model.parameters()))
    except (AttributeError, TypeError):
        return None
