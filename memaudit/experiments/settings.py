"""What a sweep is: its settings (SweepSettings), the training budget per size (step schedules),
the keys that say whether a stored point belongs to the settings, and the parsers of the CLI's lists.

The training budget grows with n_train (AUTO_STEPS): a fixed budget leaves the large points
undertrained (research/feasibility.md).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UsageError
from ..recovery import DEFAULT_STEPS_PER_UNIT, DEFAULT_T0

# Default sweep: built-in synthetic language, nano preset. Sized to finish in ≤ 30 min on 2 CPU
# cores with 2 workers (docs/transition.md records the measurement).
DEFAULT_SIZES = (8, 64, 512, 4096, 65536)
# Training budget: AUTO_BASE steps at n ≤ AUTO_N0, growing as (n / AUTO_N0)^(1/3), capped at
# AUTO_CAP. Memorizing a larger set needs more steps; past the capacity of the model the budget
# only has to learn the language, which takes a size-independent number of steps.
AUTO_BASE = 1000
AUTO_N0 = 8
AUTO_EXPONENT = 1 / 3
AUTO_CAP = 3000
DEFAULT_T_PROFILE = (0.01, 0.05, 0.1, 0.25)
PRIMARY_T0 = 0.25
POINT_FORMAT = 2


class SweepError(UsageError):
    """Bad sweep settings or an unusable sweep directory (CLI exit code 2)."""


# ------------------------------------------------------------------------------------- settings
def parse_int_list(text: str, what: str = "--sizes") -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise SweepError(f"{what} must be comma-separated integers (got {text!r})") from None
    if not values or any(v < 1 for v in values):
        raise SweepError(f"{what} needs at least one value, all ≥ 1 (got {text!r})")
    if len(set(values)) != len(values):
        raise SweepError(f"{what} values must be distinct (got {text!r})")
    return tuple(sorted(values))


def parse_float_list(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise SweepError(f"{what} must be comma-separated numbers (got {text!r})") from None
    if not values:
        raise SweepError(f"{what} needs at least one value")
    return values


def auto_steps(n: int, base: int = AUTO_BASE, n0: int = AUTO_N0, exponent: float = AUTO_EXPONENT,
               cap: int = AUTO_CAP) -> int:
    raw = base * max(1.0, n / n0) ** exponent
    return int(min(cap, max(base, round(raw / 100) * 100)))


def steps_schedule(spec: str | int, sizes, scale: float = 1.0, cap: int = AUTO_CAP) -> dict[int, int]:
    """Training steps per size. spec: 'auto' (AUTO_* formula with `cap`), an integer (the same for
    every size), or 'SIZE:STEPS,…' (log-linear interpolation in size between the listed points,
    constant beyond them). `scale` multiplies the result."""
    spec = str(spec).strip()
    if spec == "auto":
        table = {n: auto_steps(n, cap=cap) for n in sizes}
    elif ":" in spec:
        try:
            knots = sorted((int(a), int(b)) for a, b in (p.split(":") for p in spec.split(",") if p))
        except ValueError:
            raise SweepError(f"--steps must be 'auto', an integer or 'SIZE:STEPS,…' (got {spec!r})") from None
        if not knots or any(s < 1 or n < 1 for n, s in knots):
            raise SweepError(f"--steps knots must be positive (got {spec!r})")
        xs = np.log([n for n, _ in knots])
        ys = np.array([s for _, s in knots], dtype=np.float64)
        table = {n: int(round(float(np.interp(math.log(n), xs, ys)))) for n in sizes}
    else:
        try:
            steps = int(spec)
        except ValueError:
            raise SweepError(f"--steps must be 'auto', an integer or 'SIZE:STEPS,…' (got {spec!r})") from None
        table = {n: steps for n in sizes}
    if any(s < 1 for s in table.values()):
        raise SweepError(f"every point needs at least one training step (--steps {spec!r})")
    return {n: max(1, int(round(s * scale))) for n, s in table.items()}


@dataclass(frozen=True)
class SweepSettings:
    sizes: tuple[int, ...] = DEFAULT_SIZES
    data: str = "synthetic"
    preset: str = "nano"
    steps: str = "auto"
    steps_scale: float = 1.0
    steps_cap: int = AUTO_CAP
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.99
    seed: int = 0
    data_seed: int = 0
    seq_len: int | None = None
    vocab_size: int | None = None
    t0: tuple[float, ...] = DEFAULT_T0
    recover_n: int = 256
    steps_per_unit: int = DEFAULT_STEPS_PER_UNIT
    scan_samples: int = 256
    scan_steps: int | None = None
    t_profile: tuple[float, ...] = DEFAULT_T_PROFILE
    weights: str | None = None
    scan_raw: bool = False            # also scan the raw (non-EMA) weights, for the EMA-vs-raw comparison
    device: str = "cpu"

    def validate(self) -> None:
        from ..model import PRESETS

        if self.preset not in PRESETS:
            raise SweepError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise SweepError("--sizes needs positive training-set sizes")
        if self.weights not in (None, "ema", "raw"):
            raise SweepError("--weights must be ema or raw")
        if self.recover_n < 1 or self.scan_samples < 1:
            raise SweepError("--recover-n and --samples must be ≥ 1")
        if self.steps_scale <= 0:
            raise SweepError("--steps-scale must be > 0")
        self.schedule()

    def schedule(self) -> dict[int, int]:
        return steps_schedule(self.steps, self.sizes, self.steps_scale, self.steps_cap)

    def train_config(self, n: int):
        from ..train import TrainConfig

        return TrainConfig(data=self.data, n_train=int(n), preset=self.preset, steps=self.schedule()[n],
                           batch_size=self.batch_size, lr=self.lr, warmup=self.warmup, ema_decay=self.ema_decay,
                           seed=self.seed, data_seed=self.data_seed, seq_len=self.seq_len,
                           vocab_size=self.vocab_size, checkpoint_every=500, device=self.device)

    def eval_settings(self) -> dict:
        return {"t0": list(self.t0), "recover_n": self.recover_n, "steps_per_unit": self.steps_per_unit,
                "scan_samples": self.scan_samples, "scan_steps": self.scan_steps, "t_profile": list(self.t_profile),
                "weights": self.weights, "seed": self.seed, "point_format": POINT_FORMAT, "scan_raw": self.scan_raw}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"], d["t0"], d["t_profile"] = list(self.sizes), list(self.t0), list(self.t_profile)
        d["schedule"] = {str(k): v for k, v in self.schedule().items()}
        return d


# Training fields that must match for a checkpoint to be reused or resumed.
TRAIN_KEYS = ("data", "n_train", "preset", "batch_size", "lr", "warmup", "ema_decay", "seed", "data_seed",
              "seq_len", "vocab_size", "weight_decay", "grad_clip", "t_min")


def settings_key(d: dict) -> str:
    """A short, stable hash of a settings document (which settings a stored point was made with)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_key(cfg) -> str:
    d = asdict(cfg)
    return settings_key({k: d[k] for k in TRAIN_KEYS} | {"steps": d["steps"]})


def settings_from_dict(d: dict) -> SweepSettings:
    known = set(SweepSettings.__dataclass_fields__)
    d = {k: v for k, v in d.items() if k in known}
    for k in ("sizes", "t0", "t_profile"):
        if k in d:
            d[k] = tuple(d[k])
    return SweepSettings(**d)
