"""The one interface between checkpoint loaders and everything else.

A Denoiser knows its vocabulary size, sequence length, tokenizer (if any) and noise schedule, and
maps (tokens [B, L] int64, t [B] float in [0, 1]) to x0 log-probabilities [B, L, V] float32.
The probe, recovery, sampler and trainer never look at checkpoint formats.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .diffusion import Schedule, log_softmax_
from .model import DDiT


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISIONS = ("float32", *AUTOCAST_DTYPES)


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """The network precision of a run: as requested, or for 'auto' bfloat16 on a CUDA device that
    supports it (float16 on one that does not) and float32 elsewhere (a CPU gains nothing from it)."""
    if requested != "auto":
        return requested
    if torch.device(device).type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def at_precision(denoiser: "Denoiser", requested: str) -> "Denoiser":
    """The denoiser at a run's network precision (`resolve_precision` on its device): a shallow
    copy when that differs from its own, so the caller's Denoiser keeps its precision."""
    precision = resolve_precision(requested, denoiser.device)
    if precision == denoiser.precision:
        return denoiser
    import copy

    run = copy.copy(denoiser)
    run.precision = precision
    return run


class NonFiniteOutput(RuntimeError):
    """The network produced NaN or +inf log-probabilities (overflowing or corrupt weights): a
    runtime failure (CLI exit 5), never a verdict."""


@dataclass
class Denoiser:
    """A DDiT-family network behind the Denoiser contract.

    time_input says what the wrapped network takes as its time argument: 'sigma' (σ_t = −log α_t,
    Duo/UDLM/memaudit), 't' (raw diffusion time, GIDD) or 'none' (time conditioning off: zeros).
    output_vocab_slice drops extra output classes (a GIDD mask logit) before the log-softmax.
    precision: 'float32', or 'bfloat16' / 'float16' to run the network under autocast at that
    precision (its matrix products; GPUs run them several times faster) — the log-softmax, and so
    every probability and entropy downstream, stays float32.
    """

    model: DDiT
    schedule: Schedule
    vocab_size: int
    seq_len: int
    tokenizer: Any = None              # tokenizers.Tokenizer or None (token ids only)
    family: str = "memaudit"
    weights: str = "raw"               # which weights are loaded: 'ema' or 'raw'
    time_input: str = "sigma"
    output_vocab_slice: int | None = None
    provenance: dict = field(default_factory=dict)   # path / hub id, file hashes, config
    config: dict = field(default_factory=dict)       # the checkpoint's own config, for reports
    precision: str = "float32"

    # Declared by a family (class attributes; the probe, recovery and sampler read them, never the
    # family): prompt_conditioned — the network reads a prompt the denoiser carries (its x0
    # prediction is conditional on it); calibration_family — the family whose references must
    # validate the scan rule before a verdict is definite (None: the DDiT families the rule was fitted
    # on); own_sampler — the family generates with its own sampler (memaudit.block_sampling, which
    # needs `raw_logits(canvas, self_conditioning_logits)`, `generation` and `sampler_steps(n)`)
    # instead of the uniform posterior's ancestral steps.
    prompt_conditioned = False
    calibration_family = None
    own_sampler = False

    def __post_init__(self):
        self.model.eval()

    @property
    def time_free(self) -> bool:
        """The network takes no diffusion time: `t` in a call is ignored by it (a DDiT loaded with
        time conditioning off, GIDD's largest uniform models, DiffusionGemma)."""
        return self.time_input == "none"

    @property
    def training(self) -> dict | None:
        """The training section of the checkpoint's config (what memaudit's trainer records in a
        native checkpoint: n_train, steps_done, …); None when the config has none."""
        section = (self.config or {}).get("training")
        return section if isinstance(section, dict) else None

    @property
    def training_data(self) -> dict | None:
        """The corpus spec a native checkpoint was trained on (memaudit.data.corpus_from_spec);
        None when the config records none."""
        spec = (self.config or {}).get("data")
        return spec if isinstance(spec, dict) else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "Denoiser":
        self.model.to(device)
        return self

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        if self.time_input == "sigma":
            return self.schedule.sigma(t.float())
        if self.time_input == "t":
            return t.float()
        if self.time_input == "none":
            return torch.zeros_like(t, dtype=torch.float32)
        raise ValueError(f"unknown time input {self.time_input!r}")

    @torch.no_grad()   # not inference_mode: callers update the result in place (x̂ = exp_)
    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] int64, t [B] (or scalar) → log p_θ(x_0 | x_t) [B, L, V] float32."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        device = self.device
        tokens = tokens.to(device)
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.dim() == 0:
            t = t.expand(tokens.shape[0])
        if self.precision == "float32":
            log_probs = self.log_probs(tokens, t)
        else:
            with torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[self.precision]):
                log_probs = self.log_probs(tokens, t)
            log_probs = log_probs.float()
        # Log-probabilities are ≤ 0 (−inf allowed: a class with probability 0); NaN and +inf fail
        # the comparison (the maximum propagates NaN). Checked here, once for every caller, because
        # an entropy of NaN inputs would otherwise reach a verdict.
        if not bool(log_probs.amax() <= 0):
            raise NonFiniteOutput(
                f"the model produced NaN or infinite log-probabilities at t={float(t.max()):.3g} "
                f"(overflowing or corrupt weights); no verdict")
        return log_probs

    def log_probs(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The family-specific part of __call__ (inputs already validated and on the device)."""
        logits = self.model(tokens, self.time_features(t))
        if self.output_vocab_slice is not None:
            logits = logits[..., : self.output_vocab_slice]
        # In place on the network's own output (a fresh tensor): no second [B, L, V] tensor.
        return log_softmax_(logits.float().contiguous())

    def decode(self, ids) -> str | None:
        if self.tokenizer is None:
            return None
        ids = [int(i) for i in ids]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def architecture(self) -> dict:
        """The network's shape, for `inspect` (DDiT fields)."""
        arch = self.model.config
        return {"hidden_size": arch.hidden_size, "cond_dim": arch.cond_dim, "n_blocks": arch.n_blocks,
                "n_heads": arch.n_heads, "mlp_ratio": arch.mlp_ratio, "output_classes": arch.vocab_size,
                "time_conditioning": arch.time_conditioning}

    def describe(self) -> dict:
        """Provenance for reports: family, weights, shapes, parameter count, source."""
        return {
            "family": self.family,
            "weights": self.weights,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "time_input": self.time_input,
            "schedule": self.schedule.to_dict(),
            "n_parameters": self.model.num_parameters(),
            "has_tokenizer": self.tokenizer is not None,
            **self.provenance,
        }
