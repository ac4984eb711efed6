"""The error of memaudit.data: every bad input raises :class:`DataError` with one human sentence,
and :func:`check_int` is the integer check that raises it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UsageError


class DataError(UsageError):
    """A corpus could not be built from the given input (message: one human sentence)."""


def check_int(value: Any, what: str, minimum: int) -> int:
    """``value`` as an int; DataError unless it is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{what} must be an integer, got {value!r}.")
    if value < minimum:
        raise DataError(f"{what} must be at least {minimum}, got {value}.")
    return int(value)
