"""SEDD (Score Entropy Discrete Diffusion, louaaron/Score-Entropy-Discrete-Diffusion) with a uniform graph.

Two layouts:

    run directory     <run>/.hydra/config.yaml + <run>/checkpoints-meta/checkpoint.pth
                      checkpoint.pth = {'model': state dict (no prefix), 'ema': {'decay',
                      'num_updates', 'shadow_params'}, 'optimizer', 'step'}; a specific
                      <run>/checkpoints/checkpoint_N.pth may be passed instead
    HF mixin folder   config.json (the whole Hydra config: tokens, graph.type, model.*, noise.*) +
                      model.safetensors / pytorch_model.bin (PyTorchModelHubMixin)

The network is the same DDiT, but its output is a *log concrete score*, not x0 logits:
exp(out[i, y]) ≈ p_t(x with position i set to y) / p_t(x), with the entry of the current token
forced to 0 (ratio 1). memaudit turns it into the x0 distribution that Duo/UDLM networks output —
p(x_0^i | x_t^{-i}) — exactly as the score defines it for the uniform graph (docs/formats.md):

    p_t^i(y)  = softmax_y(out[i, y])            single-site conditional of the noisy marginal
    x̂_i(y)   = (p_t^i(y) − (1 − α_t)/V) / α_t   undo the uniform mixing q_t = α_t I + (1 − α_t)/V
                                                (= e^{−σQ} applied to p_t^i), α_t = e^{−σ_t}

clipped at 0 and renormalised (a learned score need not be exactly consistent). The absorbing
graph is masked diffusion and is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..denoiser import Denoiser
from . import Adapter, LoadError, UnsupportedCheckpoint, file_sha256, read_json
from .common import (MASKED_REASON, arch_from_state, as_int, build_model, cfg_get, check_tokenizer_vocab,
                     drop_rotary_buffers, ema_state, hub_provenance, is_tensor_dict, jsonable, make_schedule,
                     read_yaml, remote_code_note)
from .safe_pickle import resolve_interpolations, safe_load


def x0_log_probs_from_log_score(log_score: torch.Tensor, tokens: torch.Tensor, sigma: torch.Tensor,
                                vocab_size: int) -> torch.Tensor:
    """SEDD uniform-graph log score [B, L, V] at total noise σ [B] → log p(x_0^i | x_t^{-i}) [B, L, V].

    The score's entry at the current token is forced to 0 (ratio 1), as SEDD's forward does.
    """
    log_score = torch.scatter(log_score.float(), -1, tokens[..., None], torch.zeros_like(log_score[..., :1]).float())
    p_t = torch.softmax(log_score.double(), dim=-1)
    alpha = torch.exp(-sigma.double())[:, None, None]
    x0 = ((p_t - (1 - alpha) / vocab_size) / alpha).clamp_min(0)
    x0 = x0 / x0.sum(-1, keepdim=True)
    return torch.log(x0).clamp_min(-1e4).float()


@dataclass
class SEDDDenoiser(Denoiser):
    """A SEDD score network behind the Denoiser contract (x0 log-probabilities, see module doc)."""

    def log_probs(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        device = self.device
        sigma = self.schedule.sigma(t).to(device=device, dtype=torch.float32)
        # the score → x0 conversion in float32 even when the network runs under autocast
        return x0_log_probs_from_log_score(self.model(tokens, sigma).float(), tokens, sigma, self.vocab_size)


def schedule_from_config(cfg: dict, source: str):
    """SEDD's `noise` entry → a memaudit schedule (SEDD's own defaults when a field is absent)."""
    noise = cfg.get("noise") if isinstance(cfg.get("noise"), dict) else {}
    kind = str(noise.get("type") or "").lower()
    if kind == "geometric":
        return make_schedule("geometric", source, sigma_min=noise.get("sigma_min", 1e-3),
                             sigma_max=noise.get("sigma_max", 1.0))
    if kind == "loglinear":
        return make_schedule("loglinear", source)  # SEDD's LogLinearNoise() uses its default eps = 1e-3
    raise LoadError(f"{source}: unsupported SEDD noise type {kind!r} (geometric or loglinear)")


def _load_weights_file(folder: Path) -> tuple[dict, Path]:
    from .hf import load_hf_weights

    return load_hf_weights(folder)


class SEDDAdapter(Adapter):
    family = "sedd (uniform graph)"
    description = "SEDD run directory (.hydra/config.yaml + checkpoints-meta/checkpoint.pth) or HF mixin folder"

    @staticmethod
    def _run_root(path: Path) -> tuple[Path, Path] | None:
        if path.is_dir() and (path / ".hydra" / "config.yaml").is_file():
            ckpt = path / "checkpoints-meta" / "checkpoint.pth"
            if os.path.lexists(ckpt):
                return path, ckpt
            return None
        if path.is_file() and path.suffix == ".pth" and path.parent.name in ("checkpoints-meta", "checkpoints"):
            root = path.parent.parent
            if (root / ".hydra" / "config.yaml").is_file():
                return root, path
        return None

    def detect(self, path: Path) -> bool:
        if self._run_root(path) is not None:
            return True
        if path.is_dir() and (path / "config.json").is_file():
            try:
                cfg = read_json(path / "config.json")
            except LoadError:
                return False
            return isinstance(cfg.get("graph"), dict) and "tokens" in cfg and "model_type" not in cfg
        return False

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:
        notes: list[str] = []
        run = self._run_root(path)
        files: dict[str, str] = {}
        if run is not None:
            root, ckpt_path = run
            source = str(root)
            cfg = read_yaml(root / ".hydra" / "config.yaml")
            if not isinstance(cfg, dict):
                raise LoadError(f"{root / '.hydra' / 'config.yaml'}: not a mapping")
            files[".hydra/config.yaml"] = file_sha256(root / ".hydra" / "config.yaml")
        else:
            root, ckpt_path, source = path, None, str(path)
            cfg = read_json(path / "config.json")
            files["config.json"] = file_sha256(path / "config.json")
        try:
            cfg = resolve_interpolations(cfg)
        except LoadError as e:
            raise LoadError(f"{source}: {e}") from None
        graph = str(cfg_get(cfg, "graph.type") or "").lower()
        if graph == "absorb":
            raise UnsupportedCheckpoint(f"{source}: unsupported family sedd (absorb graph): {MASKED_REASON}")
        if graph != "uniform":
            raise LoadError(f"{source}: unknown SEDD graph type {graph!r} (uniform or absorb)")
        if cfg_get(cfg, "model.scale_by_sigma") is True:
            raise LoadError(f"{source}: model.scale_by_sigma=True is only valid for SEDD's absorb graph")
        tokens = as_int(cfg.get("tokens"), "tokens", source)
        schedule = schedule_from_config(cfg, source)

        if ckpt_path is not None:
            ckpt = safe_load(ckpt_path)
            files[str(ckpt_path.relative_to(root))] = file_sha256(ckpt_path)
            if not isinstance(ckpt, dict) or not is_tensor_dict(ckpt.get("model")):
                raise LoadError(f"{ckpt_path}: not a SEDD checkpoint (no 'model' state dict)")
            raw = ckpt["model"]
            if all(k.startswith("module.") for k in raw):  # saved from the DDP wrapper itself
                raw = {k[len("module."):]: v for k, v in raw.items()}
            ema = ckpt.get("ema")
            has_ema = isinstance(ema, dict) and isinstance(ema.get("shadow_params"), (list, tuple))
            default = "ema" if has_ema else "raw"
        else:
            raw, weight_file = _load_weights_file(path)
            files[weight_file.name] = file_sha256(weight_file)
            ema, has_ema, default = None, False, "raw"
        if weights is None:
            weights = default
        if weights == "ema":
            if not has_ema:
                raise LoadError(f"{source}: no EMA weights in this checkpoint; use --weights raw")
            chosen, extra = ema_state(ema, raw, source)
            if extra:
                notes.append(f"EMA list has {extra} extra trailing entries; ignored")
        else:
            chosen = raw
        model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
        seq_len = model_cfg.get("length")
        if seq_len is None:
            raise LoadError(f"{source}: config has no model.length")
        arch = arch_from_state(chosen, n_heads=model_cfg.get("n_heads"), seq_len=seq_len, time_conditioning=True,
                               source=source, declared={"hidden_size": model_cfg.get("hidden_size"),
                                                        "cond_dim": model_cfg.get("cond_dim"),
                                                        "n_blocks": model_cfg.get("n_blocks")},
                               keys={"n_heads": "model.n_heads", "seq_len": "model.length",
                                     "hidden_size": "model.hidden_size", "cond_dim": "model.cond_dim",
                                     "n_blocks": "model.n_blocks"})
        if arch.vocab_size != tokens:
            raise LoadError(f"{source}: vocabulary mismatch: config tokens = {tokens} but the embedding has "
                            f"{arch.vocab_size} rows (uniform graph: V = tokens)")
        model = build_model(arch, drop_rotary_buffers(chosen, arch, source), source)
        tokenizer = None
        if os.path.lexists(root / "tokenizer.json"):  # a FIFO / broken link is refused, not skipped
            from .native import load_tokenizer

            tokenizer = load_tokenizer(root / "tokenizer.json")
            check_tokenizer_vocab(tokenizer, arch.vocab_size, source, extra_ok=0)
        notes += remote_code_note(trust_remote_code)  # printed only once the load succeeded
        provenance = {
            "checkpoint": str(path.resolve()),
            "files": files,
            "format": "sedd-run" if ckpt_path is not None else "sedd-hf",
            "codebase": "sedd",
            "algorithm": "sedd",
            "diffusion": "uniform",
            "ema_available": has_ema,
            "weights_default": default,
            "output": "x0 distribution derived from the score: (softmax(log score) − (1−α_t)/V)/α_t, clipped, renormalised",
            "tokenizer_source": "tokenizer.json" if tokenizer is not None else "none (SEDD runs use GPT-2 ids)",
            "notes": notes,
            **hub_provenance(path),
        }
        return SEDDDenoiser(model=model, schedule=schedule, vocab_size=arch.vocab_size, seq_len=arch.seq_len,
                            tokenizer=tokenizer, family="sedd-uniform", weights=weights, time_input="sigma",
                            provenance=provenance, config=jsonable(cfg))
