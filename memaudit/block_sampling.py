"""The entropy-bound sampler of block-diffusion families (DiffusionGemma), for any Denoiser that
declares `own_sampler` and exposes `raw_logits(canvas, self_conditioning_logits)` and a
`generation` dict (max_denoising_steps, entropy_bound, t_min, t_max, stability_threshold,
confidence_threshold: the model's generation config).

One step, as the family generates (written from the algorithm transformers documents for
DiffusionGemma's `generate`; the random draws are memaudit's per-sequence streams, so a sample does
not depend on its batch):

    logits   = network(canvas | prompt, self-conditioning = the previous step's processed logits)
    logits  /= temperature, linear from t_max (first step) to t_min (last)
    draw     ~ softmax(logits) per token; argmax kept as the running answer
    accept the k lowest-entropy tokens with Σ H − max H ≤ entropy_bound (approximately independent
    tokens); accepted tokens take their draw, the others are re-noised with uniform random tokens
    stop a sequence once its argmax has not changed for stability_threshold steps and its mean
    entropy is below confidence_threshold

The result is the final argmax canvas. From t = 1 (a uniform random canvas) this is generation; from
a partly re-noised canvas it is the family's restoration (basins); `greedy` (argmax draws, rejected
tokens kept instead of re-noised) is its deterministic dynamics, for the fixed-point test.
"""
from __future__ import annotations

import torch

from .diffusion import entropy


def temperature(step: int, steps: int, t_min: float, t_max: float) -> float:
    """The family's linear temperature schedule; `step` counts the steps remaining (steps … 1)."""
    return t_min + (t_max - t_min) * (step / steps)


def accept_mask(token_entropy: torch.Tensor, bound: float) -> torch.Tensor:
    """[B, L] bool: the lowest-entropy tokens whose entropies, less the largest of them, sum to at
    most `bound` (at least one token per row: its own sum less its maximum is 0)."""
    ordered, order = torch.sort(token_entropy, dim=-1)
    keep = torch.cumsum(ordered, dim=-1) - ordered <= bound
    return torch.zeros_like(keep).scatter(-1, order, keep)


def draw_tokens(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One categorical draw per token by inverting the CDF with the given uniforms [B, L]."""
    cdf = torch.cumsum(probs, dim=-1)
    u = uniforms.to(cdf.device, cdf.dtype).unsqueeze(-1) * cdf[..., -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


@torch.no_grad()
def restore(denoiser, x_t: torch.Tensor, t_start: float, steps: int, *, streams=None, fixed=None,
            on_step=None) -> torch.Tensor:
    """Run the family's sampler on canvas x_t [B, L] → the final argmax canvas [B, L] int64.

    t_start = 1 (generation from a uniform random canvas) runs the model's own number of steps
    (generation config max_denoising_steps); a restoration runs `steps`. Without `streams` the
    dynamics is greedy and deterministic. fixed: optional [B, L] bool mask of positions held."""
    gen = denoiser.generation
    if t_start >= 1.0:
        steps = int(gen.get("max_denoising_steps", steps))
    device = denoiser.device
    canvas = x_t.to(device)
    batch, length = canvas.shape
    held = canvas.clone()
    fixed = None if fixed is None else fixed.to(device=device, dtype=torch.bool)
    bound, t_min, t_max = float(gen["entropy_bound"]), float(gen["t_min"]), float(gen["t_max"])
    stability, confidence = int(gen["stability_threshold"]), float(gen["confidence_threshold"])
    argmax = canvas.clone()
    history: list[torch.Tensor] = []
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    sc = None
    for step in range(steps, 0, -1):
        logits = denoiser.raw_logits(canvas, sc)
        logits = logits / temperature(step, steps, t_min, t_max)
        log_p = torch.log_softmax(logits, dim=-1)
        h = entropy(log_p).float()
        new_argmax = logits.argmax(-1)
        if streams is None:
            drawn = new_argmax
        else:
            drawn = draw_tokens(log_p.exp(), streams.uniforms(length))
        accepted = accept_mask(h, bound)
        nxt = torch.where(accepted, drawn, canvas)
        if streams is not None:
            nxt = torch.where(accepted, nxt, streams.integers(denoiser.vocab_size, length).to(device))
        if fixed is not None:
            nxt = torch.where(fixed, held, nxt)
            new_argmax = torch.where(fixed, held, new_argmax)
        keep = finished[:, None]
        canvas = torch.where(keep, canvas, nxt)
        new_argmax = torch.where(keep, argmax, new_argmax)
        sc = logits if sc is None else torch.where(keep[..., None], sc, logits)
        stable = torch.ones(batch, dtype=torch.bool, device=device) if stability == 0 else (
            len(history) >= stability and torch.stack([(a == new_argmax).all(-1) for a in history[-stability:]]).all(0))
        if not isinstance(stable, torch.Tensor):
            stable = torch.zeros(batch, dtype=torch.bool, device=device)
        history = (history + [new_argmax])[-max(stability, 1):]
        finished |= stable & (h.mean(-1) < confidence)
        argmax = new_argmax
        if on_step is not None:
            on_step()
        if bool(finished.all()):
            break
    return argmax
