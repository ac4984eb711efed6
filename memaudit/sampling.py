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


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def reverse_process(denoiser: Denoiser, x_t: torch.Tensor, t_start: float, steps: int, *,
                    greedy: bool = False, final: str = "greedy", generator: torch.Generator | None = None,
                    posterior_dtype: torch.dtype = torch.float64, on_step=None,
                    grid: str = "linear", fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Run the reverse chain from x_t [B, L] at t_start to t ≈ 0. → x_0 [B, L] int64.

    greedy=True uses the argmax of the posterior at every step (the deterministic dynamics of
    the fixed-point test). The posterior is computed in float64 by default, as in the reference.
    fixed: an optional bool mask [B, L]; those positions are held at their tokens in x_t after
    every step and in the result (conditioning by clamping: prefix/suffix prompts, infilling).
    """
    schedule = denoiser.schedule
    times = time_grid(t_start, steps, kind=grid)
    x = x_t.to(denoiser.device)
    batch = x.shape[0]
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
        x0_probs = denoiser(x, t.float().expand(batch)).to(posterior_dtype).exp()
        x = clamp(D.reverse_step(x, x0_probs, alpha_t, alpha_s, greedy=greedy, generator=generator))
        if on_step is not None:
            on_step()
    t_last = times[-1]
    x0_probs = denoiser(x, t_last.float().expand(batch)).to(posterior_dtype).exp()
    return clamp(D.noise_removal_step(x, x0_probs, schedule.alpha(t_last).expand(batch).to(x.device),
                                      mode=final, generator=generator))


@torch.no_grad()
def generate(denoiser: Denoiser, n: int, steps: int = 128, seed: int = 0, batch_size: int = 128,
             greedy: bool = False, final: str = "greedy", posterior_dtype: torch.dtype = torch.float64,
             show_progress: bool | None = None, grid: str = "linear") -> torch.Tensor:
    """Draw n sequences from the model's own reverse process, starting from uniform noise at t = 1.

    Batch b uses its own generator seeded from (seed, b), so the result does not depend on what
    ran before it. → [n, L] int64 on the CPU.
    """
    if n < 1:
        raise ValueError("number of samples must be ≥ 1")
    device = denoiser.device
    out = []
    n_batches = (n + batch_size - 1) // batch_size
    with progress_bar("sampling", total=n_batches * steps, enabled=show_progress) as task:
        for b in range(n_batches):
            size = min(batch_size, n - b * batch_size)
            generator = make_generator(seed * 100_003 + b, device)
            noise = torch.randint(0, denoiser.vocab_size, (size, denoiser.seq_len), generator=generator,
                                  device=device)
            out.append(reverse_process(denoiser, noise, 1.0, steps, greedy=greedy, final=final,
                                       generator=generator, posterior_dtype=posterior_dtype,
                                       on_step=task.advance, grid=grid).cpu())
    return torch.cat(out)


@torch.no_grad()
def infill(denoiser: Denoiser, tokens: torch.Tensor, keep: torch.Tensor, steps: int = 100, seed: int = 0,
           batch_size: int = 128, final: str = "ancestral", posterior_dtype: torch.dtype = torch.float64,
           grid: str = "linear", show_progress: bool | None = None) -> torch.Tensor:
    """Regenerate the positions of `tokens` [N, L] where `keep` [N, L] (bool) is False, holding the
    kept ones fixed: the free positions start from uniform noise at t = 1 and the reverse process
    runs `steps` steps down to t ≈ 0 with the kept positions clamped at every step (a prompt is
    a kept prefix; infilling keeps both ends). Batch b draws from its own generator seeded from
    (seed, b). → [N, L] int64 on the CPU; kept positions equal `tokens` there."""
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    keep = torch.as_tensor(keep, dtype=torch.bool)
    if tokens.dim() != 2 or keep.shape != tokens.shape:
        raise ValueError(f"tokens and keep must share one [N, L] shape, got {tuple(tokens.shape)} and "
                         f"{tuple(keep.shape)}")
    device = denoiser.device
    out = []
    n_batches = (tokens.shape[0] + batch_size - 1) // batch_size
    with progress_bar("infilling", total=n_batches * steps, enabled=show_progress) as task:
        for b in range(n_batches):
            x0 = tokens[b * batch_size:(b + 1) * batch_size].to(device)
            k = keep[b * batch_size:(b + 1) * batch_size].to(device)
            generator = make_generator(seed * 100_003 + b, device)
            noise = torch.randint(0, denoiser.vocab_size, x0.shape, generator=generator, device=device)
            out.append(reverse_process(denoiser, torch.where(k, x0, noise), 1.0, steps, final=final,
                                       generator=generator, posterior_dtype=posterior_dtype, on_step=task.advance,
                                       grid=grid, fixed=k).cpu())
    return torch.cat(out)
