"""Uniform-state discrete diffusion: schedules, corruption, exact posterior, reverse steps, NELBO.

Pure tensor math: no network, no I/O, no loops over time. The sampler that chains these steps
lives in `memaudit.sampling`; the network in `memaudit.model`.

Every noise schedule implements the `Schedule` protocol (α_t, dα_t/dt, σ_t, ε, name, to_dict) and
lives here: log-linear (memaudit, Duo, UDLM), cosine (Duo), geometric (SEDD), GIDD's hybrid keep
probability. `schedule_from_dict` is the one lookup from plain data to a schedule; every adapter
builds its schedule through it.

Notation (V = vocabulary size, x̂ = model's x0 probabilities, t ∈ [0, 1]):

    forward   q(x_t | x_0) = α_t · δ(x_0) + (1 − α_t) / V        (uniform over all V tokens)
    schedule  α_t = 1 − (1 − ε) t,   σ_t = −log α_t  (log-linear, ε = 1e-3 by default)

The model's reverse kernel p_θ(x_s | x_t) is the posterior q(x_s | x_t, x_0) with the one-hot x_0
replaced by x̂ (UDLM/Duo parameterisation): numerator and denominator are both linear in x_0, so it
is Bayes' rule with x̂ as the distribution of x_0 (research/paper.md §2.1; checked by enumeration
in tests/test_diffusion.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

T_MIN = 1e-5  # time of the final noise-removal step, as in the reference code


@runtime_checkable
class Schedule(Protocol):
    """What every noise schedule provides; `Denoiser.schedule` is typed as this.

    alpha(t)      α_t, the probability that a token is kept at time t ∈ [0, 1]
    dalpha_dt(t)  dα_t/dt (negative), the NELBO's weight
    sigma(t)      σ_t = −log α_t, the time input of Duo/UDLM/SEDD networks
    eps           the schedule's ε, for reports (log-linear, cosine: the fraction of tokens that
                  survive at t = 1; geometric: exp(−σ_max); GIDD: p_uniform)
    name          the key of the schedule in SCHEDULES
    to_dict()     the schedule as plain data for reports and configs
    """

    @property
    def name(self) -> str: ...

    @property
    def eps(self) -> float: ...

    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    def dalpha_dt(self, t: torch.Tensor) -> torch.Tensor: ...

    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def to_dict(self) -> dict: ...


def check_eps(eps, where: str = "schedule.eps") -> float:
    """The one validation of a schedule's ε, for every checkpoint format: a finite number with
    MIN_EPS ≤ ε < 1 (ε = 0 makes σ_1 infinite, and so does any ε lost in float32; ε ≥ 1 leaves no
    noise). → float(eps), or ValueError naming `where`. Which ε the scan rule was validated with is
    the rule's domain (verdict/scan.py, SCHEDULE_EPS_DOMAIN), not a load error."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, str)):
        raise ValueError(f"{where} must be a number in (0, 1), found {eps!r:.60}")
    try:
        value = float(eps)
    except ValueError:
        raise ValueError(f"{where} must be a number in (0, 1), found {eps!r:.60}") from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise ValueError(f"{where} must be a number in (0, 1), found {value}")
    if value < MIN_EPS:  # α_1 = ε: below float32's resolution of 1 − (1 − ε)t it rounds to 0, σ_1 = ∞
        raise ValueError(f"{where} = {value:g} is below {MIN_EPS:g}: α_t = 1 − (1 − ε)t cannot be represented "
                         f"in float32 near t = 1 (σ_1 would be infinite)")
    return value


MIN_EPS = 1e-6   # check_eps: smaller ε are lost in float32 arithmetic (1 − ε rounds to 1 below ~6e-8)


def check_float(value, where: str) -> float:
    """A finite number (an int, a float or a numeric string such as YAML's `1e-4`). → float(value),
    or ValueError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where} must be a number, found {value!r:.60}")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where} must be a number, found {value!r:.60}") from None
    if not math.isfinite(out):
        raise ValueError(f"{where} must be a finite number, found {value!r:.60}")
    return out


@dataclass(frozen=True)
class EpsSchedule:
    """What the schedules set by one ε (log-linear, cosine) share: the field and its plain-data form."""

    eps: float = 1e-3
    name: str = ""  # each subclass names itself

    def to_dict(self) -> dict:
        return {"name": self.name, "eps": self.eps}

    @classmethod
    def from_dict(cls, d: dict, where: str = "schedule"):
        return cls(eps=check_eps(d.get("eps", 1e-3), f"{where}.eps"))


@dataclass(frozen=True)
class LogLinearSchedule(EpsSchedule):
    """α_t = 1 − (1 − ε) t. At t = 1 a fraction ε of tokens survives."""

    name: str = "loglinear"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def dalpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -(1.0 - self.eps))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        # −log α_t, the time input of Duo/UDLM networks; log1p keeps precision near t = 0.
        return -torch.log1p(-(1.0 - self.eps) * t)


@dataclass(frozen=True)
class CosineSchedule(EpsSchedule):
    """Duo's cosine schedule (CIFAR-10 configs): α_t = 1 − cos(π/2 · (1 − (1 − ε) t)), σ_t = −log α_t."""

    name: str = "cosine"

    def _u(self, t):
        return (math.pi / 2) * (1 - (1 - self.eps) * t)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - torch.cos(self._u(t))

    def dalpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.sin(self._u(t)) * (math.pi / 2) * (1 - self.eps)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(self.alpha(t))


@dataclass(frozen=True)
class GeometricSchedule:
    """SEDD's geometric total noise σ_t = σ_min^(1−t) σ_max^t; α_t = exp(−σ_t) for the uniform graph."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name: str = "geometric"

    @property
    def eps(self) -> float:  # the fraction of tokens that survive at t = 1, for reports
        return math.exp(-self.sigma_max)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32)
        return self.sigma_min ** (1 - t) * self.sigma_max ** t

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.sigma(t))

    def dalpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        s = self.sigma(t)
        return -torch.exp(-s) * s * math.log(self.sigma_max / self.sigma_min)

    def to_dict(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @classmethod
    def from_dict(cls, d: dict, where: str = "schedule") -> "GeometricSchedule":
        smin = check_float(d.get("sigma_min", 1e-4), f"{where}.sigma_min")
        smax = check_float(d.get("sigma_max", 20.0), f"{where}.sigma_max")
        if not 0 < smin < smax <= 100:
            raise ValueError(f"geometric noise needs 0 < {where}.sigma_min < {where}.sigma_max <= 100, "
                             f"found {smin} and {smax}")
        return cls(sigma_min=smin, sigma_max=smax)


@dataclass(frozen=True)
class GiddSchedule:
    """GIDD's hybrid (mask + uniform) noise: α_t is the probability that a token is kept.

    Only α_t is exposed: memaudit's sampler and recovery treat the remaining 1 − α_t as uniform
    noise, which approximates GIDD's process (it sends part of it to [MASK]); see docs/formats.md.
    to_dict() leaves out vocab_size, so from_dict needs it given separately.
    """

    p_uniform: float
    vocab_size: int  # including the mask token
    gamma: float = 1.0
    clip_noise: float = 20.0
    name: str = "gidd-hybrid"

    @property
    def eps(self) -> float:
        return self.p_uniform

    def _parts(self, t: torch.Tensor):
        t = torch.as_tensor(t, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        p = max(math.exp(-self.clip_noise), self.p_uniform)
        log_b = max(-math.log1p((1 - p) / p * self.vocab_size / 2), -self.clip_noise)
        tg, t1g = t ** self.gamma, (1 - t) ** self.gamma
        c = (tg * t1g).sqrt() * math.exp(log_b)
        big_c = (tg + t1g + (self.vocab_size - 2) * c).clamp_min(1e-4)
        return (t1g - c) / big_c

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self._parts(t).float()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log(self._parts(t).clamp_min(1e-30)).float()

    def dalpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        h = 1e-4
        return ((self._parts(t + h) - self._parts(t - h)) / (2 * h)).float()

    def to_dict(self) -> dict:
        return {"name": self.name, "p_uniform": self.p_uniform, "gamma": self.gamma}

    @classmethod
    def from_dict(cls, d: dict, where: str = "schedule") -> "GiddSchedule":
        p_uniform = check_float(d.get("p_uniform"), f"{where}.p_uniform")
        if not 0 < p_uniform <= 1:
            raise ValueError(f"{where}.p_uniform must be a probability in (0, 1], found {p_uniform}")
        vocab_size = d.get("vocab_size")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"{where}.vocab_size must be an integer of at least 2, found {vocab_size!r:.60}")
        gamma = check_float(d.get("gamma", 1.0), f"{where}.gamma")
        clip_noise = check_float(d.get("clip_noise", 20.0), f"{where}.clip_noise")
        if gamma <= 0 or clip_noise <= 0:
            raise ValueError(f"{where}.gamma and {where}.clip_noise must be positive, found {gamma} and {clip_noise}")
        return cls(p_uniform=p_uniform, vocab_size=vocab_size, gamma=gamma, clip_noise=clip_noise)


# The one schedule lookup: a `name` (as in to_dict()) → its class. Every adapter builds its schedule
# through schedule_from_dict, so every format's fields are validated the same way.
SCHEDULES: dict[str, type] = {
    "loglinear": LogLinearSchedule, "log-linear": LogLinearSchedule, "log_linear": LogLinearSchedule,
    "cosine": CosineSchedule,
    "geometric": GeometricSchedule,
    "gidd-hybrid": GiddSchedule,
}


def schedule_from_dict(d: dict | None, where: str = "schedule") -> Schedule:
    """A schedule from plain data such as `{"name": "loglinear", "eps": 0.001}` (the name defaults to
    loglinear; fields a schedule does not list are ignored). ValueError naming the field."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping like {{\"name\": \"loglinear\", \"eps\": 0.001}}, "
                         f"found {type(d).__name__} {d!r:.60}")
    name = d.get("name", "loglinear")
    if not isinstance(name, str) or name not in SCHEDULES:
        known = ", ".join(sorted({cls.name for cls in SCHEDULES.values()}))
        raise ValueError(f"{where}.name: unsupported noise schedule {name!r:.60} (memaudit implements {known})")
    return SCHEDULES[name].from_dict(d, where)


def corrupt(x0: torch.Tensor, alpha: torch.Tensor, vocab_size: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0). x0 [B, L] int64, alpha [B] → [B, L] int64.

    A replaced token is drawn uniformly from all V tokens, so it may equal the original.
    """
    keep_draw = torch.rand(x0.shape, generator=generator, device=x0.device)
    noise = torch.randint(0, vocab_size, x0.shape, generator=generator, device=x0.device)
    return corrupt_with(x0, alpha, keep_draw, noise)


def corrupt_with(x0: torch.Tensor, alpha: torch.Tensor, keep_draw: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0) from given draws: keep_draw [B, L] uniform in [0, 1), noise [B, L] tokens."""
    keep = keep_draw < alpha.to(keep_draw.dtype)[:, None]
    return torch.where(keep, x0, noise)


def posterior(x_t: torch.Tensor, x0_probs: torch.Tensor, alpha_t: torch.Tensor,
              alpha_s: torch.Tensor) -> torch.Tensor:
    """p_θ(x_s | x_t) = q(x_s | x_t, x_0 = x̂) for s < t, as a dense [B, L, V] table.

    The reference form, for tests and small vocabularies; the sampler never builds it
    (`posterior_weights`). x_t [B, L] int64, x0_probs [B, L, V], alpha_t/alpha_s [B] →
    probabilities [B, L, V] in the dtype of x0_probs.

    numerator(j) = V α_t x̂_j [j = x_t] + (α_{t|s} − α_t)[j = x_t] + (α_s − α_t) x̂_j
                   + (1 − α_{t|s})(1 − α_s) / V
    denominator  = V α_t x̂_{x_t} + (1 − α_t)       (= Σ_j numerator(j))
    """
    vocab_size = x0_probs.shape[-1]
    dtype = x0_probs.dtype
    a_t = alpha_t.to(dtype)[:, None, None]
    a_s = alpha_s.to(dtype)[:, None, None]
    a_ts = a_t / a_s
    is_xt = torch.nn.functional.one_hot(x_t, vocab_size).to(dtype)
    x0_at_xt = torch.gather(x0_probs, -1, x_t[..., None])  # [B, L, 1]
    numerator = (vocab_size * a_t * x0_probs * is_xt + (a_ts - a_t) * is_xt
                 + (a_s - a_t) * x0_probs + (1 - a_ts) * (1 - a_s) / vocab_size)
    denominator = vocab_size * a_t * x0_at_xt + (1 - a_t)
    return numerator / denominator


def final_posterior(x_t: torch.Tensor, x0_probs: torch.Tensor, alpha_t: torch.Tensor) -> torch.Tensor:
    """The posterior with α_s = 1 (noise removal at the last step): ∝ x̂_j (V α_t [j = x_t] + 1 − α_t).
    Dense reference form, like `posterior`."""
    vocab_size = x0_probs.shape[-1]
    a_t = alpha_t.to(x0_probs.dtype)[:, None, None]
    is_xt = torch.nn.functional.one_hot(x_t, vocab_size).to(x0_probs.dtype)
    unnormalised = x0_probs * (vocab_size * a_t * is_xt + (1 - a_t))
    return unnormalised / unnormalised.sum(-1, keepdim=True)


# Work over the vocabulary is done in chunks of rows of about CHUNK_BYTES: a [B, L, V] temporary
# at a released model's shape is hundreds of MB, and on a CPU a fresh allocation of that size is
# paid in page faults every step (it costs more than the arithmetic: docs/performance.md); chunk
# temporaries stay in the cache and are reused by the allocator.
CHUNK_BYTES = 4 * 2**20


def row_chunks(x: torch.Tensor):
    """(slice of rows, chunk [rows, V]) over the rows of x [..., V] (x viewed as [N, V]; every chunk
    is a view, so writing into it writes x)."""
    flat = x.reshape(-1, x.shape[-1])
    rows = max(1, CHUNK_BYTES // max(1, x.shape[-1] * x.element_size()))
    for start in range(0, flat.shape[0], rows):
        part = slice(start, min(flat.shape[0], start + rows))
        yield part, flat[part]


def log_softmax_(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last axis, written into `logits` (float32, contiguous): no second
    [B, L, V] tensor. Safe in place: every row is reduced (max, sum of exponentials) before any of
    its elements is written, and the result equals torch.log_softmax bit for bit (tested)."""
    return torch.log_softmax(logits, dim=-1, out=logits)


# The posterior as a mixture. Split the numerator above by its terms: it is
#     w_stay · δ(x_t) + w_model · x̂ + w_uniform · Uniform(V)
# with per-token weights (divided by the denominator D = V α_t x̂_{x_t} + 1 − α_t)
#     w_stay = (V α_t x̂_{x_t} + α_{t|s} − α_t) / D,  w_model = (α_s − α_t) / D,
#     w_uniform = (1 − α_{t|s})(1 − α_s) / D,
# and α_s = 1 gives the final step's w_stay = V α_t x̂_{x_t} / D, w_model = (1 − α_t) / D.
# Sampling the mixture needs only [B, L] weights and, for the tokens that pick the x̂ part, one
# draw from x̂ itself; nothing of size [B, L, V] beyond x̂ (float32) is ever built.
@dataclass(frozen=True)
class StepDraws:
    """The uniform draws of one ancestral step, one per token, all [B, L]: `part` picks the part of
    the mixture, `within` the point of x̂'s cumulative distribution, `token` the uniform part's token.
    A step uses all three whatever part is picked, so each sample's stream advances the same way."""
    part: torch.Tensor     # float64 in [0, 1)
    within: torch.Tensor   # float32 in [0, 1)
    token: torch.Tensor    # int64 in [0, V)


def posterior_weights(x_t: torch.Tensor, x0_probs: torch.Tensor, alpha_t: torch.Tensor, alpha_s: torch.Tensor | None,
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_stay, w_model), each [B, L] in `dtype`, of the posterior mixture (the uniform part is the
    rest). alpha_s None: the final, α_s = 1, step."""
    vocab_size = x0_probs.shape[-1]
    p_xt = torch.gather(x0_probs, -1, x_t[..., None])[..., 0].to(dtype)       # x̂_{x_t}  [B, L]
    a_t = alpha_t.to(dtype)[:, None]
    denominator = vocab_size * a_t * p_xt + (1 - a_t)
    if alpha_s is None:
        return vocab_size * a_t * p_xt / denominator, (1 - a_t) / denominator
    a_s = alpha_s.to(dtype)[:, None]
    a_ts = a_t / a_s
    return (vocab_size * a_t * p_xt + (a_ts - a_t)) / denominator, (a_s - a_t) / denominator


def draw_from(probs: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: probs [..., V] (any scale), within [...] uniform in [0, 1) → [...] int64."""
    cumulative = probs.cumsum(-1)                                              # [..., V]
    target = within.to(cumulative.dtype)[..., None] * cumulative[..., -1:]     # [..., 1]
    index = torch.searchsorted(cumulative, target, right=True)[..., 0]
    return index.clamp_max(probs.shape[-1] - 1)


def sample_mixture(x_t: torch.Tensor, x0_probs: torch.Tensor, w_stay: torch.Tensor, w_model: torch.Tensor,
                   draws: StepDraws) -> torch.Tensor:
    """One draw per token from w_stay · δ(x_t) + w_model · x̂ + (rest) · Uniform. → [B, L] int64.
    Only the tokens whose draw picks the x̂ part are drawn from x̂ (a few per cent of them per
    step): the others never need its cumulative distribution."""
    part = draws.part.to(w_stay.device, w_stay.dtype)
    x = torch.where(part < w_stay, x_t, draws.token.to(x_t.device))
    from_x0 = (part >= w_stay) & (part < w_stay + w_model)                    # [B, L] bool
    if bool(from_x0.any()):
        within = draws.within.to(x0_probs.device)[from_x0]                     # [K]
        x[from_x0] = draw_from(x0_probs[from_x0], within)                      # x0_probs[from_x0]: [K, V]
    return x


def greedy_choice(x_t: torch.Tensor, x0_probs: torch.Tensor, stay: torch.Tensor, other_scale: torch.Tensor,
                  other_offset: torch.Tensor | float) -> torch.Tensor:
    """argmax_j of an (unnormalised) posterior whose value is `stay` at j = x_t and
    other_scale · x̂_j + other_offset elsewhere (other_scale ≥ 0), ties to the lower index as a
    dense argmax breaks them. → [B, L] int64."""
    best_other = torch.empty_like(x_t)
    flat_best, flat_xt = best_other.view(-1), x_t.reshape(-1)
    for rows, chunk in row_chunks(x0_probs):
        others = chunk.scatter(-1, flat_xt[rows, None], -1.0)                 # x̂ with x_t excluded
        flat_best[rows] = others.argmax(-1)
    other = other_scale * torch.gather(x0_probs, -1, best_other[..., None])[..., 0].to(stay.dtype) + other_offset
    keep = (stay > other) | ((stay == other) & (x_t < best_other))
    return torch.where(keep, x_t, best_other)


def reverse_step(x_t: torch.Tensor, x0_probs: torch.Tensor, alpha_t: torch.Tensor,
                 alpha_s: torch.Tensor, draws: StepDraws | None = None,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """One step from t to s: an ancestral draw from the posterior (`draws` given) or its argmax
    (draws None: the greedy dynamics). x0_probs [B, L, V] float32. The per-token weights are
    computed in `dtype`. → x_s [B, L]."""
    if draws is not None:
        w_stay, w_model = posterior_weights(x_t, x0_probs, alpha_t, alpha_s, dtype)
        return sample_mixture(x_t, x0_probs, w_stay, w_model, draws)
    vocab_size = x0_probs.shape[-1]
    a_t, a_s = alpha_t.to(dtype)[:, None], alpha_s.to(dtype)[:, None]
    a_ts = a_t / a_s
    uniform = (1 - a_ts) * (1 - a_s) / vocab_size
    p_xt = torch.gather(x0_probs, -1, x_t[..., None])[..., 0].to(dtype)
    stay = vocab_size * a_t * p_xt + (a_ts - a_t) + (a_s - a_t) * p_xt + uniform   # the numerator at x_t
    return greedy_choice(x_t, x0_probs, stay, a_s - a_t, uniform)


def noise_removal_step(x_t: torch.Tensor, x0_probs: torch.Tensor, alpha_t: torch.Tensor,
                       mode: str = "greedy", draws: StepDraws | None = None,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Final step to t = 0. 'greedy': argmax x̂ (Duo's greedy tail). 'ancestral': a draw from the
    α_s = 1 posterior (the reference recovery evaluation; needs `draws`). 'argmax': the argmax of
    that posterior (the end of the greedy fixed-point dynamics)."""
    if mode == "greedy":
        return x0_probs.argmax(-1)
    if mode == "ancestral":
        if draws is None:
            raise ValueError("an ancestral noise-removal step needs its draws")
        w_stay, w_model = posterior_weights(x_t, x0_probs, alpha_t, None, dtype)
        return sample_mixture(x_t, x0_probs, w_stay, w_model, draws)
    if mode == "argmax":
        a_t = alpha_t.to(dtype)[:, None]
        p_xt = torch.gather(x0_probs, -1, x_t[..., None])[..., 0].to(dtype)
        return greedy_choice(x_t, x0_probs, p_xt * (x0_probs.shape[-1] * a_t + (1 - a_t)), 1 - a_t, 0.0)
    raise ValueError(f"unknown noise-removal mode {mode!r}; use 'greedy', 'ancestral' or 'argmax'")


def nelbo_per_token(log_x0_probs: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                    alpha_t: torch.Tensor, dalpha_dt: torch.Tensor) -> torch.Tensor:
    """UDLM continuous-time NELBO integrand per token. → [B, L] (≥ 0, 0 iff x̂ = δ(x_0)).

    With x̄ = V α_t δ(x_0) + (1 − α_t) and x̄_θ = V α_t x̂ + (1 − α_t), i = x_t:

        loss = α'_t / (V α_t) · [ V / x̄_i − V / x̄_θ,i − Σ_j (x̄_j / x̄_i) log( x̄_θ,i x̄_j / (x̄_θ,j x̄_i) ) ]

    It is the dt → 0 limit of KL(q(x_s | x_t, x_0) ‖ p_θ(x_s | x_t)) / dt (tests check this by
    enumeration). Computed in float32 or better from log-probabilities for stability at small t.
    """
    vocab_size = log_x0_probs.shape[-1]
    log_x0_probs = log_x0_probs.float() if log_x0_probs.dtype in (torch.float16, torch.bfloat16) else log_x0_probs
    dtype = log_x0_probs.dtype
    a = alpha_t.to(dtype)[:, None, None]
    # log x̄_θ = logaddexp(log(V α) + log x̂, log(1 − α)): no cancellation when α → 1.
    log_xbar_theta = torch.logaddexp(torch.log(vocab_size * a) + log_x0_probs,
                                     torch.log1p(-a).expand_as(log_x0_probs))
    log_xbar_theta_i = torch.gather(log_xbar_theta, -1, x_t[..., None])  # [B, L, 1]

    same = (x0 == x_t)[..., None].to(dtype)  # f = [x_0 = x_t]
    a2 = a[..., 0]  # [B, 1]
    is_x0 = torch.nn.functional.one_hot(x0, vocab_size).to(dtype)
    # x̄_j / x̄_i: (V α [j = x0] + 1 − α) / (V α f + 1 − α)
    xbar = vocab_size * a * is_x0 + (1 - a)
    xbar_i = vocab_size * a * same + (1 - a)
    ratio = xbar / xbar_i
    log_ratio = torch.log(ratio)
    kl_like = (ratio * (log_xbar_theta_i - log_xbar_theta + log_ratio)).sum(-1)  # [B, L]
    inv_terms = vocab_size / xbar_i[..., 0] - vocab_size * torch.exp(-log_xbar_theta_i[..., 0])
    weight = dalpha_dt.to(dtype)[:, None] / (vocab_size * a2)  # negative
    return weight * (inv_terms - kl_like)


def sample_times(batch_size: int, t_min: float = 1e-3, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", antithetic: bool = True) -> torch.Tensor:
    """t ~ U[t_min, 1]; antithetic (stratified) across the batch to lower the loss variance."""
    u = torch.rand(1 if antithetic else batch_size, generator=generator, device=device)
    if antithetic:
        u = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0
    return t_min + (1.0 - t_min) * u


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of the distributions on the last axis, in float32 or better.
    Computed in row chunks (`row_chunks`), so its temporaries stay small whatever the batch."""
    log_probs = log_probs.float() if log_probs.dtype in (torch.float16, torch.bfloat16) else log_probs
    out = torch.empty(log_probs.shape[:-1], dtype=log_probs.dtype, device=log_probs.device)
    for rows, chunk in row_chunks(log_probs):
        probs = chunk.exp()
        # 0 · log 0 = 0: the where keeps −inf logits from producing NaN. It tests probs == 0, not
        # probs > 0, so that a NaN probability stays NaN and the caller's finiteness check can fire.
        out.view(-1)[rows] = -torch.where(probs == 0, torch.zeros_like(probs), probs * chunk).sum(-1)
    return out


def max_entropy(vocab_size: int) -> float:
    return math.log(vocab_size)
