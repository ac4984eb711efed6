"""Hugging Face–style directories (local, or a hub snapshot resolved by hub.py).

    config.json                      model_type and architecture fields
    model.safetensors                weights (or model.safetensors.index.json + shards, or
                                     pytorch_model.bin read with torch.load(weights_only=True))
    tokenizer.json (optional)        a `tokenizers` tokenizer

Supported model types, loaded natively into memaudit's DDiT (their `modeling_*.py` is never run):

    udlm       UDLMConfig: vocab_size, model_length, hidden_dim, cond_dim, n_blocks, n_heads,
               time_conditioning, cfg. Keys 'backbone.*'. Time input σ_t (log-linear, ε = 1e-3).
               The UDLM push script stores the EMA weights.
    duo, DUO   DUOConfig: vocab_size, model_length, hidden_dim, cond_dim, n_blocks, n_heads, causal.
               Keys 'backbone.*'. Time input σ_t (log-linear, ε = 1e-3).
    dit        GIDD DITConfig: vocab_size, max_seq_len, hidden_size, timestep_cond_dim,
               num_hidden_layers, num_attention_heads, p_uniform, t_eps. Keys unprefixed, plus
               rotary cos/sin buffers. Time input: raw t ∈ [t_eps, 1 − t_eps]. The last output class
               is the mask token ([MASK] appended to GPT-2), whose logit GIDD sets to −1e6 before
               the softmax; memaudit drops it (output_vocab_slice).

Refused: mdlm (masked diffusion), GIDD with p_uniform = 0 (pure masking noise), gidd-easydel
`gidd` (no time input, not a DDiT), anything else (named in the error).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..denoiser import Denoiser
from . import Adapter, LoadError, UnsupportedCheckpoint, check_memory, file_sha256, read_json, regular_file
from .common import (MASKED_REASON, arch_from_config, as_bool, as_float, build_model, check_tokenizer_vocab,
                     drop_rotary_buffers, hub_provenance, jsonable, make_schedule, remote_code_note,
                     strip_prefix)

SUPPORTED_MODEL_TYPES = ("udlm", "duo", "dit")


def index_shards(folder: Path, index: Path) -> list[Path]:
    """The shard files a model.safetensors.index.json names, each checked to lie in `folder` and to
    exist, before any is read; a broken index or a missing shard is a one-line LoadError."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise LoadError(f"{index}: broken shard index: no weight_map of tensor name to shard file name")
    shards = []
    for shard in sorted(set(weight_map.values())):
        shard_path = folder / shard
        if shard_path.parent != folder or shard in ("", ".", ".."):
            raise LoadError(f"{index}: shard {shard!r:.60} outside the model folder")
        if not os.path.lexists(shard_path):
            raise LoadError(f"{folder}: weight shard missing ({shard})")
        shards.append(shard_path)
    return shards


def load_hf_weights(folder: Path) -> tuple[dict, Path]:
    """State dict from model.safetensors (single or sharded) or pytorch_model.bin. → (state, file).

    Every file is checked to be a readable regular file, and their total size against the memory
    available, before any is read."""
    from safetensors import SafetensorError

    from .native import load_safetensors_file
    from .safe_pickle import check_tensor_geometry, check_zip_members

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    binary = folder / "pytorch_model.bin"

    def read_safetensors(files: list[Path], source: Path) -> dict:
        sizes = [regular_file(f).st_size for f in files]
        check_memory(sum(sizes), f"reading {len(files)} weight file{'s' if len(files) > 1 else ''}", str(source))
        state: dict = {}
        for f in files:
            try:
                state.update(load_safetensors_file(f))
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise LoadError(f"{f}: unreadable or truncated safetensors file ({str(e).splitlines()[0]})") from None
        return state

    if os.path.lexists(single):
        return read_safetensors([single], single), single
    if os.path.lexists(index):
        return read_safetensors(index_shards(folder, index), index), index
    if os.path.lexists(binary):
        size = regular_file(binary).st_size
        check_memory(size, "reading the weight file", str(binary))
        check_zip_members(binary)
        try:
            state = torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - weights_only refusals and corrupt files alike
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoadError(f"{binary}: cannot read with torch.load(weights_only=True) ({first})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise LoadError(f"{binary}: not a state dict of tensors")
        check_tensor_geometry(state, str(binary))
        return state, binary
    raise LoadError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


@dataclass
class GiddDenoiser(Denoiser):
    """GIDD: raw t as the time input, clamped to the [t_eps, 1 − t_eps] range it was trained on."""

    t_eps: float = 1e-4

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        return t.float().clamp(self.t_eps, 1 - self.t_eps)


def _mask_token_id(folder: Path, tokenizer, vocab_size: int, cfg: dict) -> tuple[int, str]:
    if isinstance(cfg.get("mask_token_id"), int):
        return cfg["mask_token_id"], "config.json mask_token_id"
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / name
        if f.is_file():
            try:
                mask = read_json(f).get("mask_token")
            except LoadError:
                continue
            if isinstance(mask, dict):
                mask = mask.get("content")
            if isinstance(mask, str) and tokenizer is not None and tokenizer.token_to_id(mask) is not None:
                return tokenizer.token_to_id(mask), f"{name} mask_token {mask!r}"
    if tokenizer is not None and tokenizer.token_to_id("[MASK]") is not None:
        return tokenizer.token_to_id("[MASK]"), "tokenizer [MASK]"
    return vocab_size - 1, "assumed last id (GPT-2 + appended [MASK])"


class HFAdapter(Adapter):
    family = "hf (udlm, duo, gidd dit)"
    description = "Hugging Face directory: config.json (model_type udlm | duo | dit) + model.safetensors / pytorch_model.bin"

    def detect(self, path: Path) -> bool:
        if not path.is_dir() or not (path / "config.json").is_file():
            return False
        try:
            cfg = read_json(path / "config.json")
        except LoadError:
            return (path / "model.safetensors").is_file() or (path / "pytorch_model.bin").is_file()
        return "model_type" in cfg or "architectures" in cfg

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:
        source = str(path)
        cfg = read_json(path / "config.json")
        model_type = str(cfg.get("model_type") or "")
        kind = model_type.lower()
        if kind == "mdlm":
            raise UnsupportedCheckpoint(f"{source}: unsupported family mdlm: {MASKED_REASON}")
        if kind == "gidd":
            raise UnsupportedCheckpoint(f"{source}: unsupported family gidd (EasyDeL): not a time-conditioned "
                                        f"DDiT; memaudit supports GIDD's model_type 'dit' checkpoints")
        if kind not in SUPPORTED_MODEL_TYPES:
            extra = (" (--trust-remote-code loads a checkpoint through its own modeling code, which this one "
                     "does not name: config.json has no auto_map)" if trust_remote_code else "")
            raise LoadError(f"{source}: model_type {model_type or '(none)'!r} is not a supported family "
                            f"(supported: udlm, duo, dit (GIDD)){extra}")
        notes: list[str] = []
        raw, weight_file = load_hf_weights(path)
        files = {"config.json": file_sha256(path / "config.json"), weight_file.name: file_sha256(weight_file)}
        tokenizer = None
        if os.path.lexists(path / "tokenizer.json"):  # a FIFO / broken link is refused, not skipped
            from .native import load_tokenizer

            tokenizer = load_tokenizer(path / "tokenizer.json")
            files["tokenizer.json"] = file_sha256(path / "tokenizer.json")

        if kind in ("udlm", "duo"):
            state = strip_prefix(raw, "backbone.")
            if not state:
                raise LoadError(f"{weight_file}: no backbone.* weights")
            if cfg.get("causal") is True:
                raise UnsupportedCheckpoint(f"{source}: unsupported: causal (autoregressive) {model_type} model")
            if cfg.get("cfg") is True or any(k.startswith("cond_map.") for k in state):
                raise UnsupportedCheckpoint(f"{source}: unsupported: class-conditional backbone (cond_map); "
                                            f"memaudit probes unconditional models")
            if "time_conditioning" in cfg:
                tc = as_bool(cfg["time_conditioning"], "time_conditioning", source)
            elif kind == "duo":
                tc = True
                notes.append("config.json has no time_conditioning field; Duo's uniform-state models always "
                             "condition on sigma (UniformState asserts it)")
            else:
                raise LoadError(f"{source}: config.json has no time_conditioning field")
            arch = arch_from_config(state, cfg, {"n_heads": "n_heads", "seq_len": "model_length",
                                                 "hidden_size": "hidden_dim", "cond_dim": "cond_dim",
                                                 "n_blocks": "n_blocks"}, time_conditioning=tc, source=source)
            stored = "ema" if kind == "udlm" else "raw"
            schedule, time_input = make_schedule("loglinear", source, eps=1e-3), ("sigma" if tc else "none")
            notes.append("noise schedule not stored in config.json; using the log-linear schedule "
                         "(eps = 1e-3) both codebases train with")
            output_slice, cls, extra_fields = None, Denoiser, {}
            algorithm = kind
        else:  # GIDD 'dit'
            state = dict(raw)
            if state and all(k.startswith("dit.") for k in state):
                state = strip_prefix(state, "dit.")
            p_uniform = as_float(cfg.get("p_uniform", 0.0), "p_uniform", source)
            if p_uniform > 1:
                raise LoadError(f"{source}: p_uniform must be a probability in (0, 1], found {p_uniform}")
            if p_uniform <= 0:
                raise UnsupportedCheckpoint(f"{source}: unsupported family gidd (p_uniform = 0): trained with pure "
                                            f"masking noise; {MASKED_REASON}")
            arch = arch_from_config(state, cfg, {"n_heads": "num_attention_heads", "seq_len": "max_seq_len",
                                                 "hidden_size": "hidden_size", "cond_dim": "timestep_cond_dim",
                                                 "n_blocks": "num_hidden_layers"}, time_conditioning=True, source=source)
            mask_id, mask_how = _mask_token_id(path, tokenizer, arch.vocab_size, cfg)
            if mask_id != arch.vocab_size - 1:
                raise UnsupportedCheckpoint(f"{source}: unsupported: GIDD mask token id {mask_id} is not the last "
                                            f"of {arch.vocab_size} output classes")
            notes.append(f"mask token id {mask_id} ({mask_how}) removed from the output; GIDD's hybrid noise is "
                         f"approximated as uniform by memaudit's sampler and recovery")
            stored = "raw"
            t_eps = as_float(cfg.get("t_eps", 1e-4), "t_eps", source)
            if not 0 <= t_eps < 0.5:
                raise LoadError(f"{source}: t_eps must be in [0, 0.5), found {t_eps}")
            schedule = make_schedule("gidd-hybrid", source, where="config.json", p_uniform=p_uniform,
                                     vocab_size=arch.vocab_size)
            time_input, output_slice = "t", arch.vocab_size - 1
            cls, extra_fields, algorithm = GiddDenoiser, {"t_eps": t_eps}, "gidd"
        if weights is None:
            weights = stored
        if weights != stored:
            raise LoadError(f"{source}: this {model_type} checkpoint stores only its {stored} weights; "
                            f"use --weights {stored}")
        in_vocab = arch.vocab_size if output_slice is None else output_slice
        if tokenizer is not None:
            check_tokenizer_vocab(tokenizer, arch.vocab_size, source, extra_ok=1 if output_slice is None else 0)
        model = build_model(arch, drop_rotary_buffers(state, arch, source), source)
        notes += remote_code_note(trust_remote_code)  # printed only once the load succeeded
        provenance = {
            "checkpoint": str(path.resolve()),
            "files": files,
            "format": f"hf-{kind}",
            "codebase": {"udlm": "udlm", "duo": "duo", "dit": "gidd"}[kind],
            "algorithm": algorithm,
            "diffusion": "uniform" if kind != "dit" else f"hybrid (p_uniform={cfg.get('p_uniform')})",
            "ema_available": stored == "ema",
            "weights_default": stored,
            "tokenizer_source": "tokenizer.json" if tokenizer is not None else "none",
            "notes": notes,
            **hub_provenance(path),
        }
        return cls(model=model, schedule=schedule, vocab_size=in_vocab, seq_len=arch.seq_len, tokenizer=tokenizer,
                   family={"udlm": "udlm", "duo": "duo", "dit": "gidd"}[kind], weights=weights,
                   time_input=time_input, output_vocab_slice=output_slice, provenance=provenance,
                   config=jsonable(cfg), **extra_fields)
