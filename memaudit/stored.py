"""Data-free search for stored sequences: the associative-memory view of a partial memorizer.

A model that generalizes overall can still store documents that were duplicated in its training
data. Its own samples rarely show them (issue 28): the sampler spends its mass on the language,
not on a few attractors. Stored patterns are attractors of the model's own dynamics with wide
basins and near-zero conditional entropy, so this module looks for attractors directly:

    1. Starts (each seeded from (seed, 'stored', kind, i)):
         noise     uniform random tokens at t = 1;
         boundary  uniform random tokens with a document boundary (the tokenizer's EOS token)
                   clamped at position 0 — the model writes a document opening, where duplicated
                   documents (licence headers, settings files) are most often found;
         renoised  the scan's own samples re-noised at t = RENOISE_T;
         shifted   the second half of a scan sample moved to the front, the rest noise (a stored
                   sequence that a sample only began continues in the window).
    2. Dynamics: the model's ancestral reverse process from the start's time to t ≈ 0 (quadratic
       grid, greedy noise removal), then the greedy fixed-point map (argmax of the exact posterior,
       t = 0.25, 4 steps) repeated until the sequence stops changing (at most CONVERGE_ITERS
       times). Argmax steps from uniform noise do not denoise at all (the posterior's mode is the
       current token until t is small): measured, 0 of 12 boundary starts left noise.
    3. Spans: per-token entropy H_i of x̂ on the converged sequence at t = 1e-5; a candidate is a
       maximal run of at least `min_span` tokens with H_i < `tau`, no EOS inside, that is not
       degenerate (at least `min_distinct` of its tokens distinct, not periodic with a period ≤ 8:
       greedy dynamics of any model fall into repetitions that are low-entropy attractors too).
    4. Recurrence: how many independent starts converged onto a sequence holding the candidate's
       central `core` tokens; candidates sharing a core are merged.
    5. Basin: the converged sequence is re-noised at each t0 in `basin_t0` (BASIN_TRIALS seeded
       draws) and restored by the ancestral reverse process; the basin is the share of the
       span's corrupted tokens that come back (as `recover` measures it). The same is measured on
       windows of the same length of the scan's typical samples: the baseline.
    6. Finding: a candidate is a stored sequence when its basin at the largest t0 is at least
       `basin_min` and exceeds the baseline's 95th percentile by `margin`. The number held is
       estimated from the recurrence counts with Chao1 (k_obs + f1² / (2 f2); f1 (f1 − 1) / 2
       when no candidate recurred twice): starts are draws from the model's attractors, and the
       unseen ones are estimated from how many were seen once.

docs/method.md ("Stored subsets") records what was measured on planted-subset models and what did
not work. The search is evidence beside the regime verdict; `--fail-on stored-subset` gates on it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .denoiser import Denoiser
from .sampling import SampleStreams, batches, reverse_process
from .stats import derive_seed

RENOISE_T = 0.5
FIXED_POINT_T = 0.25
FIXED_POINT_STEPS = 4
CONVERGE_ITERS = 3
BASIN_TRIALS = 4
BASIN_STEPS = 16
T_ENTROPY = 1e-5
START_KINDS = ("noise", "boundary", "renoised", "shifted")
OUTLIER_RATIO = 0.6


@dataclass(frozen=True)
class StoredSettings:
    starts: int = 48                     # starts per kind (renoised / shifted: at most the samples given)
    kinds: tuple = START_KINDS
    steps: int = 32                      # greedy reverse steps from t = 1 (RENOISE_T starts: proportionally fewer)
    tau: float = 0.1                     # nats: a token of a stored span is this predictable
    min_span: int = 24                   # tokens
    min_distinct: float = 0.35           # share of distinct tokens in a span
    core: int = 12                       # tokens: the central n-gram that identifies a candidate
    max_candidates: int = 8              # basins measured for at most this many (longest × most recurrent)
    basin_t0: tuple = (0.25, 0.5)
    basin_min: float = 0.6
    margin: float = 0.15
    baseline_windows: int = 16
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        d["basin_t0"] = list(self.basin_t0)
        return d


@dataclass
class StoredResult:
    settings: dict
    n_starts: int
    candidates: list = field(default_factory=list)     # every candidate measured, findings flagged
    baseline: dict = field(default_factory=dict)
    found: int = 0
    estimate: float = 0.0
    estimate_ci: list = field(default_factory=list)
    network_calls: int = 0                                # rows × steps, a cost measure
    start_kinds: dict = field(default_factory=dict)
    # A sequence-level signal, reported only (its false-finding rate is not measured yet): starts
    # whose converged sequence has a mean entropy below OUTLIER_RATIO × the median of their kind.
    low_entropy_starts: dict = field(default_factory=dict)

    @property
    def finding(self) -> str | None:
        if not self.found:
            return None
        return f"a stored subset of ≈ {self.estimate:.0f} sequence{'s' if round(self.estimate) != 1 else ''}"

    def summary(self) -> dict:
        d = asdict(self)
        d["finding"] = self.finding
        return d


# ------------------------------------------------------------------------------------ helpers
def low_entropy_runs(entropy: np.ndarray, tokens: np.ndarray, tau: float, min_len: int, eos: int | None):
    """Maximal runs [start, stop) of positions with entropy < tau (no EOS inside), ≥ min_len long."""
    ok = entropy < tau
    if eos is not None:
        ok &= tokens != eos
    runs, start = [], None
    for i, flag in enumerate(list(ok) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= min_len:
                runs.append((start, i))
            start = None
    return runs


def degenerate(span: np.ndarray, min_distinct: float) -> bool:
    """A run of few distinct tokens, or periodic with a period ≤ 8 (repetition attractors)."""
    if len(np.unique(span)) < min_distinct * len(span):
        return True
    return any(bool(np.all(span[p:] == span[:-p])) for p in range(1, min(9, len(span))))


def chao1(counts: list[int]) -> tuple[float, list[float]]:
    """Chao1 richness estimate from the number of starts that reached each found sequence, and a
    log-normal 95 % interval (Chao 1987)."""
    k = len(counts)
    if k == 0:
        return 0.0, [0.0, 0.0]
    f1 = sum(1 for c in counts if c == 1)
    f2 = sum(1 for c in counts if c == 2)
    extra = f1 * f1 / (2 * f2) if f2 else f1 * (f1 - 1) / 2
    estimate = k + extra
    if extra <= 0:
        return float(k), [float(k), float(k)]
    var = f1 * (f1 - 1) / 2 + f1 * (2 * f1 - 1) ** 2 / 4 if not f2 else \
        f2 * ((f1 / f2) ** 4 / 4 + (f1 / f2) ** 3 + (f1 / f2) ** 2 / 2)
    c = math.exp(1.96 * math.sqrt(math.log(1 + var / extra ** 2)))
    return float(estimate), [float(k + extra / c), float(k + extra * c)]


class _Counter:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __getattr__(self, name):
        return getattr(self.denoiser, name)

    def __call__(self, tokens, t):
        self.calls += int(tokens.shape[0])
        return self.denoiser(tokens, t)


@torch.no_grad()
def converge(denoiser, x: torch.Tensor, t_start: float, steps: int, fixed=None, batch_size: int = 64,
             seed: int = 0, purpose: str = "x") -> torch.Tensor:
    """The model's ancestral reverse process from x at t_start (row i's draws from
    (seed, 'stored-reverse', purpose, i)), greedy noise removal, then the greedy fixed-point map
    until the sequence stops changing. (Argmax-of-posterior steps from uniform noise keep the
    noise: under uniform corruption the posterior's mode is the current token until t is small,
    measured; the annealed, ancestral descent is what reaches an attractor.)"""
    out = []
    for a, b in batches(x.shape[0], batch_size):
        f = None if fixed is None else fixed[a:b]
        streams = SampleStreams(seed, ("stored-reverse", purpose), range(a, b))
        y = reverse_process(denoiser, x[a:b], t_start, steps, streams=streams, final="greedy", fixed=f,
                            grid="quadratic").cpu()
        for _ in range(CONVERGE_ITERS):
            z = reverse_process(denoiser, y, FIXED_POINT_T, FIXED_POINT_STEPS, final="argmax", fixed=f).cpu()
            if bool((z == y).all()):
                break
            y = z
        out.append(y)
    return torch.cat(out)


@torch.no_grad()
def token_entropy(denoiser, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    from .diffusion import entropy

    out = []
    for a, b in batches(x.shape[0], batch_size):
        out.append(entropy(denoiser(x[a:b], torch.full((b - a,), T_ENTROPY))).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def span_basin(denoiser, x: torch.Tensor, spans: list[tuple[int, int]], t0: float, trials: int, seed: int,
               purpose: str, batch_size: int = 64) -> np.ndarray:
    """Share of each span's corrupted tokens restored after re-noising its sequence at t0 and running
    the ancestral reverse process (BASIN_STEPS steps), pooled over `trials` draws. x [N, L]. → [N]."""
    n, length = x.shape
    rep = x.repeat_interleave(trials, 0)
    idx = range(n * trials)
    restored = np.zeros(n)
    corrupted = np.zeros(n)
    for a, b in batches(len(rep), batch_size):
        streams = SampleStreams(seed, ("stored-basin", purpose, repr(float(t0))), idx[a:b])
        alpha = denoiser.schedule.alpha(torch.full((b - a,), float(t0), dtype=torch.float64))
        x0 = rep[a:b]
        xt = streams.corrupt(x0, alpha, denoiser.vocab_size)
        y = reverse_process(denoiser, xt, float(t0), BASIN_STEPS, streams=streams, final="greedy").cpu()
        for r in range(a, b):
            i = r // trials
            lo, hi = spans[i]
            c = (xt[r - a, lo:hi] != x0[r - a, lo:hi])
            corrupted[i] += int(c.sum())
            restored[i] += int((c & (y[r - a, lo:hi] == x0[r - a, lo:hi])).sum())
    return np.where(corrupted > 0, restored / np.maximum(corrupted, 1), np.nan)


# ------------------------------------------------------------------------------------ search
def make_starts(denoiser, settings: StoredSettings, samples: np.ndarray | None):
    """(kind, start tokens [n, L], t_start, fixed mask or None) for each start kind that applies."""
    length, vocab = denoiser.seq_len, denoiser.vocab_size
    eos = eos_id(denoiser)
    out = []
    for kind in settings.kinds:
        n = settings.starts
        streams = SampleStreams(settings.seed, ("stored", kind), range(n))
        noise = streams.integers(vocab, length)
        if kind == "noise":
            out.append((kind, noise, 1.0, None))
        elif kind == "boundary":
            if eos is None:
                continue
            noise[:, 0] = eos
            fixed = torch.zeros_like(noise, dtype=torch.bool)
            fixed[:, 0] = True
            out.append((kind, noise, 1.0, fixed))
        elif kind in ("renoised", "shifted"):
            if samples is None or len(samples) == 0:
                continue
            base = torch.as_tensor(np.asarray(samples[:n]), dtype=torch.int64)
            m = base.shape[0]
            if kind == "renoised":
                alpha = denoiser.schedule.alpha(torch.full((m,), RENOISE_T, dtype=torch.float64))
                out.append((kind, SampleStreams(settings.seed, ("stored", kind), range(m)).corrupt(base, alpha, vocab),
                            RENOISE_T, None))
            else:
                half = length // 2
                x = noise[:m].clone()
                x[:, :length - half] = base[:, half:]
                fixed = torch.zeros_like(x, dtype=torch.bool)
                fixed[:, :length - half] = True
                out.append((kind, x, 1.0, fixed))
        else:
            raise ValueError(f"unknown start kind {kind!r}; use {', '.join(START_KINDS)}")
    return out


def eos_id(denoiser) -> int | None:
    tok = getattr(denoiser, "tokenizer", None)
    if tok is None:
        return None
    from .data.tokenizer import EOS_TOKEN

    for name in (EOS_TOKEN, "<|endoftext|>", "</s>", "[SEP]", "<eos>"):
        try:
            i = tok.token_to_id(name)
        except Exception:   # noqa: BLE001 - a tokenizer without that lookup has no such token
            i = None
        if i is not None and int(i) < denoiser.vocab_size:
            return int(i)
    return None


def search_stored(denoiser: Denoiser, settings: StoredSettings = StoredSettings(),
                  samples: np.ndarray | None = None, batch_size: int = 64) -> StoredResult:
    """Run the search (module docstring). samples: the scan's samples [N, L] (re-noised / shifted
    starts and the typical-basin baseline); without them only noise and boundary starts run and
    the baseline is measured on converged noise starts that hold no candidate."""
    model = _Counter(denoiser)
    eos = eos_id(denoiser)
    starts = make_starts(model, settings, samples)
    converged, kinds = [], []
    for kind, x, t_start, fixed in starts:
        steps = max(1, int(round(settings.steps * t_start)))
        converged.append(converge(model, x, t_start, steps, fixed, batch_size, settings.seed, kind))
        kinds += [kind] * x.shape[0]
    if not converged:
        return StoredResult(settings=settings.to_dict(), n_starts=0)
    conv = torch.cat(converged)
    conv_np = conv.numpy()
    ent = token_entropy(model, conv, batch_size)

    # Candidates: low-entropy, non-degenerate runs; merged by their central core n-gram.
    groups: dict[bytes, dict] = {}
    start_spans: list[list[tuple[int, int]]] = []
    for i in range(len(conv_np)):
        runs = [r for r in low_entropy_runs(ent[i], conv_np[i], settings.tau, settings.min_span, eos)
                if not degenerate(conv_np[i, r[0]:r[1]], settings.min_distinct)]
        start_spans.append(runs)
        for lo, hi in runs:
            mid = (lo + hi) // 2
            c0 = max(lo, min(mid - settings.core // 2, hi - settings.core))
            key = conv_np[i, c0:c0 + settings.core].tobytes()
            g = groups.setdefault(key, {"row": i, "span": (lo, hi), "starts": set(), "kinds": set()})
            if hi - lo > g["span"][1] - g["span"][0]:
                g["row"], g["span"] = i, (lo, hi)
    # Recurrence: every start whose converged sequence holds the core anywhere.
    rows_bytes = [conv_np[i] for i in range(len(conv_np))]
    for key, g in groups.items():
        core = np.frombuffer(key, dtype=conv_np.dtype)
        for i, row in enumerate(rows_bytes):
            if _contains(row, core):
                g["starts"].add(i)
                g["kinds"].add(kinds[i])
    # Merge groups whose cores occur in the same set of starts and overlap in text (one sequence,
    # several cores): keep the longest span per set of starts.
    merged: dict[frozenset, dict] = {}
    for g in groups.values():
        key = frozenset(g["starts"])
        if key not in merged or (g["span"][1] - g["span"][0]) > (merged[key]["span"][1] - merged[key]["span"][0]):
            merged[key] = g
    cands = sorted(merged.values(), key=lambda g: (-len(g["starts"]), -(g["span"][1] - g["span"][0]), g["row"]))
    cands = cands[:settings.max_candidates]

    result = StoredResult(settings=settings.to_dict(), n_starts=len(conv_np),
                          start_kinds={k: kinds.count(k) for k in dict.fromkeys(kinds)})
    means = ent.mean(axis=1)
    kinds_arr = np.asarray(kinds)
    for kind in result.start_kinds:
        sel = np.flatnonzero(kinds_arr == kind)
        median = float(np.median(means[sel]))
        low = sel[means[sel] < OUTLIER_RATIO * median]
        low = low[np.argsort(means[low], kind="stable")]
        result.low_entropy_starts[kind] = {
            "n": int(len(low)), "of": int(len(sel)), "median_entropy": median,
            "examples": [{"mean_entropy": float(means[i]),
                          "text": denoiser.decode(conv_np[i]) if getattr(denoiser, "tokenizer", None) is not None
                          else None} for i in low[:3]]}
    if cands:
        # Baseline: windows of typical sequences (the scan's samples, else converged starts without
        # a candidate), same length as the longest candidate, measured the same way.
        width = max(g["span"][1] - g["span"][0] for g in cands)
        if samples is not None and len(samples):
            typical = torch.as_tensor(np.asarray(samples[:settings.baseline_windows]), dtype=torch.int64)
        else:
            plain = [i for i, s in enumerate(start_spans) if not s][:settings.baseline_windows]
            typical = conv[plain] if plain else conv[:settings.baseline_windows]
        rng = np.random.default_rng(derive_seed(settings.seed, "stored-baseline"))
        width = min(width, denoiser.seq_len)
        base_spans = [(int(s), int(s) + width) for s in rng.integers(0, denoiser.seq_len - width + 1, len(typical))]
        t_top = max(settings.basin_t0)
        base = span_basin(model, typical, base_spans, t_top, BASIN_TRIALS, settings.seed, "baseline", batch_size)
        base_q95 = float(np.nanquantile(base, 0.95)) if np.isfinite(base).any() else 0.0
        result.baseline = {"t0": t_top, "n": int(len(typical)), "width": int(width),
                           "mean": float(np.nanmean(base)) if np.isfinite(base).any() else math.nan, "q95": base_q95}
        rows = torch.as_tensor(np.stack([conv_np[g["row"]] for g in cands]))
        spans = [g["span"] for g in cands]
        basins = {t0: span_basin(model, rows, spans, t0, BASIN_TRIALS, settings.seed, "candidate", batch_size)
                  for t0 in settings.basin_t0}
        counts = []
        for j, g in enumerate(cands):
            lo, hi = g["span"]
            tokens = conv_np[g["row"], lo:hi]
            b_top = float(basins[t_top][j])
            stored = bool(b_top >= settings.basin_min and b_top >= base_q95 + settings.margin)
            entry = {"tokens": tokens.tolist(), "text": denoiser.decode(tokens) if getattr(denoiser, "tokenizer", None)
                     is not None else None, "length": int(hi - lo), "span": [int(lo), int(hi)],
                     "mean_entropy": float(ent[g["row"], lo:hi].mean()),
                     "recurrence": len(g["starts"]), "start_kinds": sorted(g["kinds"]),
                     "basin": {repr(float(t)): float(basins[t][j]) for t in settings.basin_t0},
                     "stored": stored}
            result.candidates.append(entry)
            if stored:
                counts.append(len(g["starts"]))
        result.found = len(counts)
        result.estimate, result.estimate_ci = chao1(counts)
    result.network_calls = model.calls
    return result


def _contains(row: np.ndarray, core: np.ndarray) -> bool:
    n = len(core)
    if n > len(row):
        return False
    windows = np.lib.stride_tricks.sliding_window_view(row, n)
    return bool((windows == core).all(axis=1).any())


# The scan's default search (bounded cost: docs/performance.md) and the deeper one of --stored-search deep.
# 'auto' sizes the starts to the samples the scan drew (SAMPLES_PER_START samples per start of each
# kind, between AUTO_MIN_STARTS and its `starts`), so that the search adds ≤ 30 % to a scan that
# finds no candidate; basins are measured (at t0 = 0.5 only) just for the candidates found.
DEFAULT_SCAN = StoredSettings(starts=16, kinds=("boundary", "renoised", "shifted"), basin_t0=(0.5,),
                              max_candidates=4, baseline_windows=8)
SAMPLES_PER_START = 10
AUTO_MIN_STARTS = 4
DEEP = StoredSettings(starts=64, kinds=START_KINDS, max_candidates=16)
MODES = {"auto": DEFAULT_SCAN, "default": DEFAULT_SCAN, "deep": DEEP}


def stored_settings_for(spec, seed: int, n_samples: int | None = None) -> StoredSettings:
    """The search settings of a scan: 'auto' (DEFAULT_SCAN with its starts sized to the scan's
    n_samples) / 'default' / 'deep', or a StoredSettings, at the scan's seed."""
    from dataclasses import replace

    if isinstance(spec, StoredSettings):
        return replace(spec, seed=seed)
    if spec not in MODES:
        raise ValueError(f"stored search must be one of off, {', '.join(MODES)} (got {spec!r})")
    settings = replace(MODES[spec], seed=seed)
    if spec == "auto" and n_samples is not None:
        starts = max(AUTO_MIN_STARTS, min(settings.starts, round(n_samples / SAMPLES_PER_START)))
        settings = replace(settings, starts=starts)
    return settings
