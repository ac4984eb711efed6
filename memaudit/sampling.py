"""The reverse-process loop: chains the steps of `memaudit.diffusion` with a Denoiser.

Generation starts at t = 1 from uniform random tokens; recovery starts at t0 from a corrupted
sequence. Both walk a linear time grid down to T_MIN = 1e-5 and finish with one noise-removal
step (greedy argmax of x̂, or an ancestral draw from the α_s = 1 posterior). `infill` regenerates
chosen positions from noise at t = 1 while the others are held fixed (the `fixed` mask of
`reverse_process`): prompted generation, infilling, prefix-conditioned extraction.
"""
from __future__ import annotations

import torch

from . import diffusion as D
from .denoiser import Denoiser
from .progress import progress_bar
from .stats import derive_seed


GRIDS = ("linear", "quadratic")


def time_grid(t_start: float, steps: int, t_min: float = D.T_MIN, kind: str = "linear") -> torch.Tensor:
    """steps + 1 times from t_start down to t_min (float64).

    'linear' spaces them evenly (the reference code). 'quadratic', t_k = t_min + (t_start − t_min)
    (1 − k/S)², spends more of the steps near t = 0, where the last tokens are decided, and fewer
    at high noise, where each step changes little; it matches a linear grid with about twice the
    steps (docs/performance.md).
    """
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    if kind == "linear":
        return torch.linspace(float(t_start), t_min, steps + 1, dtype=torch.float64)
    if kind == "quadratic":
        fraction_left = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return t_min + (float(t_start) - t_min) * fraction_left ** 2
    raise ValueError(f"unknown time grid {kind!r}; use one of {', '.join(GRIDS)}")


class SampleStreams:
    """One random stream per sequence, seeded from (seed, purpose, the sequence's index) alone.

    Every draw of a sequence (its starting noise, its corruption, every reverse step) comes from
    its own CPU generator, so it does not depend on the batch the sequence is in, on the batch
    size, on what ran before, or on the device; with a network whose output for a sequence does
    not depend on its batch (memaudit.model), results are identical for any --batch-size.
    """

    def __init__(self, seed: int, purpose: tuple, indices):
        self.generators = [torch.Generator().manual_seed(derive_seed(seed, *purpose, int(i))) for i in indices]

    def __len__(self) -> int:
        return len(self.generators)

    def integers(self, high: int, length: int) -> torch.Tensor:
        """[B, length] int64 uniform in [0, high)."""
        return torch.stack([torch.randint(0, high, (length,), generator=g) for g in self.generators])

    def uniforms(self, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B, length] uniform in [0, 1)."""
        return torch.stack([torch.rand(length, generator=g, dtype=dtype) for g in self.generators])

    def step_draws(self, length: int, vocab_size: int) -> D.StepDraws:
        """The draws of one ancestral step (memaudit.diffusion.StepDraws), in a fixed order per sequence."""
        part, within, token = [], [], []
        for g in self.generators:
            part.append(torch.rand(length, generator=g, dtype=torch.float64))
            within.append(torch.rand(length, generator=g, dtype=torch.float32))
            token.append(torch.randint(0, vocab_size, (length,), generator=g))
        return D.StepDraws(torch.stack(part), torch.stack(within), torch.stack(token))

    def corrupt(self, x0: torch.Tensor, alpha: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) with each sequence's own draws. x0 [B, L] (CPU), alpha [B]."""
        length = x0.shape[1]
        return D.corrupt_with(x0, alpha, self.uniforms(length), self.integers(vocab_size, length))


def reverse_process(denoiser: Denoiser, x_t: torch.Tensor, t_start: float, steps: int, *,
                    streams: SampleStreams | None = None, final: str = "greedy",
                    posterior_dtype: torch.dtype = torch.float64, on_step=None,
                    grid: str = "linear", fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Run the reverse chain from x_t [B, L] at t_start to t ≈ 0. → x_0 [B, L] int64.

    With `streams` (one per row of x_t) every step is an ancestral draw from the exact posterior;
    without, every step is its argmax (the deterministic dynamics of the fixed-point test), and
    `final` must not be 'ancestral'. The posterior's per-token weights are computed in
    posterior_dtype (float64 by default, as in the reference); x̂ stays float32.
    fixed: an optional bool mask [B, L]; those positions are held at their tokens in x_t after
    every step and in the result (conditioning by clamping: prefix/suffix prompts, infilling).
    A denoiser that declares `own_sampler` (a block-diffusion family) runs its family's sampler
    instead (memaudit.block_sampling.restore), with the same streams, fixed mask and greedy mode.
    """
    if getattr(denoiser, "own_sampler", False):   # a family with its own sampler (memaudit.block_sampling)
        from .block_sampling import restore

        return restore(denoiser, x_t, t_start, steps, streams=streams, fixed=fixed, on_step=on_step)
    schedule = denoiser.schedule
    times = time_grid(t_start, steps, kind=grid)
    x = x_t.to(denoiser.device)
    batch, length = x.shape
    if fixed is not None:
        fixed = fixed.to(device=x.device, dtype=torch.bool)
        if fixed.shape != x.shape:
            raise ValueError(f"fixed mask has shape {tuple(fixed.shape)}, the tokens {tuple(x.shape)}")
        held = x.clone()
        clamp = lambda y: torch.where(fixed, held, y)  # noqa: E731
    else:
        clamp = lambda y: y  # noqa: E731
    for i in range(steps):
        t, s = times[i], times[i + 1]
        alpha_t = schedule.alpha(t).expand(batch).to(x.device)
        alpha_s = schedule.alpha(s).expand(batch).to(x.device)
        x0_probs = denoiser(x, t.float().expand(batch)).exp_()                  # float32 [B, L, V], in place
        draws = None if streams is None else streams.step_draws(length, denoiser.vocab_size)
        x = clamp(D.reverse_step(x, x0_probs, alpha_t, alpha_s, draws, dtype=posterior_dtype))
        del x0_probs
        if on_step is not None:
            on_step()
    t_last = times[-1]
    x0_probs = denoiser(x, t_last.float().expand(batch)).exp_()
    draws = streams.step_draws(length, denoiser.vocab_size) if final == "ancestral" and streams is not None else None
    return clamp(D.noise_removal_step(x, x0_probs, schedule.alpha(t_last).expand(batch).to(x.device),
                                      mode=final, draws=draws, dtype=posterior_dtype))


def batches(n: int, batch_size: int):
    """(start, stop) of consecutive batches covering range(n)."""
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


@torch.no_grad()
def generate(denoiser: Denoiser, n: int, steps: int = 128, seed: int = 0, batch_size: int = 128,
             greedy: bool = False, final: str = "greedy", posterior_dtype: torch.dtype = torch.float64,
             show_progress: bool | None = None, grid: str = "linear", first: int = 0, task=None) -> torch.Tensor:
    """Draw n sequences from the model's own reverse process, starting from uniform noise at t = 1.

    Sample i (i = first … first + n − 1) uses its own random stream, derived from
    (seed, 'sample', i) (`SampleStreams`), so the result does not depend on batch_size, and
    generate(n=64) is generate(n=32) followed by generate(n=32, first=32). greedy: argmax dynamics
    after the random start. task: a progress task to advance (else a bar of its own).
    → [n, L] int64 on the CPU.
    """
    if n < 1:
        raise ValueError("number of samples must be ≥ 1")
    out = []
    with progress_bar("sampling", total=n * steps, enabled=False if task is not None else show_progress) as own:
        task = task if task is not None else own
        for start, stop in batches(n, batch_size):
            streams = SampleStreams(seed, ("sample",), range(first + start, first + stop))
            noise = streams.integers(denoiser.vocab_size, denoiser.seq_len)
            out.append(reverse_process(denoiser, noise, 1.0, steps, streams=None if greedy else streams,
                                       final=final, posterior_dtype=posterior_dtype,
                                       on_step=lambda: task.advance(stop - start), grid=grid).cpu())
    return torch.cat(out)


@torch.no_grad()
def infill(denoiser: Denoiser, tokens: torch.Tensor, keep: torch.Tensor, steps: int = 100, seed: int = 0,
           batch_size: int = 128, final: str = "ancestral", posterior_dtype: torch.dtype = torch.float64,
           grid: str = "linear", show_progress: bool | None = None, purpose: tuple = ("infill",)) -> torch.Tensor:
    """Regenerate the positions of `tokens` [N, L] where `keep` [N, L] (bool) is False, holding the
    kept ones fixed: the free positions start from uniform noise at t = 1 and the reverse process
    runs `steps` steps down to t ≈ 0 with the kept positions clamped at every step (a prompt is
    a kept prefix; infilling keeps both ends). Row i draws from its own stream (seed, *purpose, i),
    so the result does not depend on batch_size. → [N, L] int64 on the CPU; kept positions equal
    `tokens` there."""
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    keep = torch.as_tensor(keep, dtype=torch.bool)
    if tokens.dim() != 2 or keep.shape != tokens.shape:
        raise ValueError(f"tokens and keep must share one [N, L] shape, got {tuple(tokens.shape)} and "
                         f"{tuple(keep.shape)}")
    out = []
    with progress_bar("infilling", total=tokens.shape[0] * steps, enabled=show_progress) as task:
        for start, stop in batches(tokens.shape[0], batch_size):
            x0, k = tokens[start:stop], keep[start:stop]
            streams = SampleStreams(seed, tuple(purpose), range(start, stop))
            noise = streams.integers(denoiser.vocab_size, tokens.shape[1])
            out.append(reverse_process(denoiser, torch.where(k, x0, noise), 1.0, steps, streams=streams, final=final,
                                       posterior_dtype=posterior_dtype,
                                       on_step=lambda: task.advance(stop - start), grid=grid, fixed=k).cpu())
    return torch.cat(out)
