"""How many CPU threads torch uses, chosen by the work (docs/performance.md, "Threads").

Measured (benchmarks/bench_threads.py): on a shared 2-core machine a nano model trains at 4,892
tokens/s with 1 thread and 527 with 2, and scans 8.5 samples/s against 1.2: a small network's
matrix products are too small to split, and a second thread that waits for a busy core stalls
every operation. So a model under SMALL_MODEL_PARAMETERS runs on 1 thread; a larger one keeps
torch's default (one per core).

Who decides, first match wins:
    --threads N (or MEMAUDIT_THREADS=N)      the user
    OMP_NUM_THREADS / MKL_NUM_THREADS set    the user, through the environment: left alone
    the model's size                         1 thread below SMALL_MODEL_PARAMETERS, else torch's default

Only the command line applies it (`enable`); the Python API leaves torch's setting alone. A
report never depends on the thread count.
"""
from __future__ import annotations

import os

SMALL_MODEL_PARAMETERS = 2_000_000   # nano (0.8 M) and micro (1.8 M) presets
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


def choose(n_parameters: int | None) -> int | None:
    """The thread count for a model of n_parameters (None: leave torch's as it is)."""
    wanted = requested()
    if wanted is not None:
        return wanted
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    if n_parameters is not None and n_parameters < SMALL_MODEL_PARAMETERS:
        return 1
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
