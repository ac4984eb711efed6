"""Memory budget: how much memory a run may use, and how many sequences fit in one network call.

A scan's peak memory is set by the largest batch it sends through the network: its output is one
[B, L, V] float32 tensor, turned into log-probabilities and then x̂ in place; beside it a step
builds at most the rows of x̂ that its draws pick and their running sum (all rows, at worst, on a
coarse grid), and the work over the vocabulary otherwise runs in small row chunks
(memaudit.diffusion.row_chunks); under autocast the network's half-precision output is one more
half tensor. Then the activations of the transformer. The reverse steps never build a float64 or
one-hot [B, L, V] tensor (memaudit.diffusion: the posterior as a mixture), so the estimate below
is linear in B and the batch that fits a budget can be chosen before anything is allocated.

The default budget is a share of the memory actually available to this process: the smallest of
the free memory the kernel reports (MemAvailable), the cgroup's limit less its usage (containers,
CI runners), and the address-space limit (RLIMIT_AS) less what the process already maps; on a GPU,
the free device memory.
"""
from __future__ import annotations

import re
import resource
from dataclasses import dataclass

import torch

from .errors import UsageError

# Share of the available memory a run plans to use when --max-memory is not given: the estimate
# below is an upper bound measured on CPU (docs/performance.md), and the rest leaves room for the
# allocator's slack, the Python heap and other processes.
DEFAULT_SHARE = 0.5
# The automatic batch never exceeds this: beyond it a CPU gains nothing per sequence, and a GPU
# saturates well before it at the released models' sizes.
MAX_AUTO_BATCH = 256
# On a CPU a matrix product of ≈ 4,096 rows (batch × L tokens) already runs at the machine's
# matmul speed, so a larger batch only costs memory: the automatic batch stops there (128
# sequences at L = 32, 32 at L = 128 — about 3 GiB for an LM1B-small-shaped model — and 4 at
# L = 1,024). A GPU fills its budget instead.
CPU_TOKENS_PER_CALL = 4096
# [B, L, V] float32 tensors alive at once at the peak of a step (3, see the module docstring, and
# one for slack), and float32 activations per token and hidden unit (residual, normed input,
# q/k/v, attention output, the MLP's 4d hidden layer and its GELU). Measured against peak RSS in
# docs/performance.md (OWT-small shape, batch 2: 0.4 GiB per sequence, estimated 0.8).
VOCAB_TENSORS = 4
HIDDEN_TENSORS = 14
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class BudgetError(UsageError):
    """A batch size or memory budget that cannot work (CLI exit code 2)."""


MAX_SIZE = 2.0**60      # bytes: --max-memory above one exbibyte is a typo, not a machine
MAX_BATCH = 1 << 20     # sequences per network call


def parse_size(text: str | int | None) -> int | None:
    """'4GiB', '500MB', '2.5g', '123456' → bytes; None stays None."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise BudgetError(f"--max-memory: cannot read {text!r} as a size (use e.g. 4GiB, 500MB or bytes)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not value < MAX_SIZE:   # also inf (a number of 400 digits)
        raise BudgetError(f"--max-memory: {text[:40]!s}{'…' if len(str(text)) > 40 else ''} is beyond any machine "
                          f"(at most {MAX_SIZE:.0e} bytes)")
    size = int(value)
    if size <= 0:
        raise BudgetError(f"--max-memory must be positive (got {text!r})")
    return size


def parse_batch_size(text: str | int | None) -> int | None:
    """'auto' (or None) → None; a positive integer → itself."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    try:
        value = int(str(text))
    except ValueError:
        raise BudgetError(f"--batch-size must be 'auto' or a positive integer (got {text!r})") from None
    if value < 1:
        raise BudgetError(f"--batch-size must be ≥ 1 (got {value})")
    if value > MAX_BATCH:
        raise BudgetError(f"--batch-size must be at most {MAX_BATCH:,} (got {str(value)[:40]})")
    return value


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError):
        return None


def _address_space_available() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        return None
    return soft


def memory_available() -> int | None:
    """Bytes this process can still allocate: the least of available RAM, the cgroup's remaining
    limit and the remaining address space under RLIMIT_AS. None when none of them is known."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available()) if v is not None]
    return min(known) if known else None


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes this process can still allocate on `device`: memory_available() on the CPU (8 GiB
    when nothing is known), the free device memory on a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    known = memory_available()
    return 8 * 2**30 if known is None else known


def bytes_per_sequence(vocab_size: int, seq_len: int, hidden_size: int, n_heads: int) -> int:
    """Upper estimate of the memory one sequence adds to a network call and its reverse step."""
    per_token = VOCAB_TENSORS * vocab_size + HIDDEN_TENSORS * hidden_size + n_heads * seq_len
    return 4 * seq_len * per_token


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int
    per_sequence: int       # bytes, estimated
    budget: int             # bytes
    chosen: str             # "auto" or "given"

    def describe(self) -> str:
        return (f"batch {self.batch_size} ({self.chosen}; ≈ {fmt_bytes(self.per_sequence)} per sequence, "
                f"budget {fmt_bytes(self.budget)})")


def model_shape(denoiser) -> tuple[int, int]:
    """(hidden size, heads) of the denoiser's network (DDiT), or a conservative guess."""
    config = getattr(getattr(denoiser, "model", None), "config", None)
    return int(getattr(config, "hidden_size", 1024)), int(getattr(config, "n_heads", 16))


def plan_batch(denoiser, requested: int | None, max_memory: int | None, work: int | None = None) -> BatchPlan:
    """The batch size of a run: `requested`, checked against the budget, or (None) the largest that
    fits it, at most MAX_AUTO_BATCH (on a CPU at most CPU_TOKENS_PER_CALL tokens) and at most `work`
    (the number of sequences to process).
    BudgetError when the given size, or a single sequence, does not fit."""
    budget = max_memory if max_memory is not None else int(DEFAULT_SHARE * available_memory(denoiser.device))
    hidden, heads = model_shape(denoiser)
    per_sequence = bytes_per_sequence(denoiser.vocab_size, denoiser.seq_len, hidden, heads)
    source = "--max-memory" if max_memory is not None else f"{DEFAULT_SHARE:.0%} of the available memory"
    if requested is not None:
        if requested * per_sequence > budget:
            fits = budget // per_sequence
            raise BudgetError(f"--batch-size {requested} needs about {fmt_bytes(requested * per_sequence)} "
                              f"(≈ {fmt_bytes(per_sequence)} per sequence of {denoiser.seq_len} × "
                              f"{denoiser.vocab_size}) but the budget is {fmt_bytes(budget)} ({source}); "
                              + (f"use --batch-size auto or ≤ {fits}" if fits >= 1 else
                                 "not even one sequence fits: raise --max-memory or use a larger machine"))
        return BatchPlan(requested, per_sequence, budget, "given")
    fits = budget // per_sequence
    if fits < 1:
        raise BudgetError(f"one sequence needs about {fmt_bytes(per_sequence)} ({denoiser.seq_len} × "
                          f"{denoiser.vocab_size} tokens) but the budget is {fmt_bytes(budget)} ({source}); "
                          f"raise --max-memory or use a larger machine")
    cap = MAX_AUTO_BATCH
    if torch.device(denoiser.device).type == "cpu":
        cap = min(cap, max(1, CPU_TOKENS_PER_CALL // denoiser.seq_len))
    batch = min(int(fits), cap, work if work else cap)
    return BatchPlan(max(1, batch), per_sequence, budget, "auto")

