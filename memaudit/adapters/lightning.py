"""PyTorch Lightning `.ckpt` files from Duo, UDLM, UNI-D2 and the paper authors' Duo fork.

Layout (all three codebases save through Lightning's ModelCheckpoint):

    ckpt['state_dict']        OrderedDict 'backbone.<DDiT name>' → tensor (+ 'teacher.*' in Duo
                              distillation runs, 'model.*' duplicates in UNI-D2, 'noise.*' …)
    ckpt['ema']               {'decay', 'num_updates', 'shadow_params': [tensor, …]} in
                              backbone.parameters() order (then noise.parameters())
    ckpt['hyper_parameters']  {'config': OmegaConf DictConfig, 'tokenizer': transformers tokenizer,
                              ['vocab_size']}
    ckpt['optimizer_states'], ['lr_schedulers'], ['loops'], ['callbacks'], ['sampler'] … (ignored)

The file is read with memaudit's restricted unpickler (safe_pickle): the config and tokenizer come
back as inert records and are turned into plain data; nothing from the file is imported or run.

Which config fields mean what:

    Duo / paper fork  algo.name (duo, duo_base, distillation … uniform; mdlm, sedd, d3pm masked; ar),
                      algo.time_conditioning, noise.type (log-linear | cosine), noise.eps
    UDLM              diffusion (uniform | absorbing_state), parameterization (d3pm | subs | ar),
                      time_conditioning (top level), noise.type (loglinear)
    UNI-D2            algo._target_ (…algorithms.udlm.UDLM, …mdlm.MDLM …), algo.time_conditioning
                      (False for UNI-D2's UDLM: read, never inferred), noise._target_ / noise.eps
    all               model.hidden_size, cond_dim, n_blocks, n_heads, length
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..denoiser import Denoiser
from . import Adapter, LoadError, UnsupportedCheckpoint, file_sha256
from .common import (MASKED_REASON, arch_from_config, as_bool, build_model, cfg_get, check_tokenizer_vocab,
                     drop_rotary_buffers, ema_state, hub_provenance, is_tensor_dict, jsonable, make_schedule,
                     remote_code_note, strip_prefix, tokenizer_from_pickle)
from .safe_pickle import Inert, global_name, pickle_bytes, resolve_interpolations, safe_load, to_plain


_DUO_MASKED = {"mdlm", "sedd", "d3pm", "d3pm_absorb", "sedd_absorb", "bd3lm"}
_UNID2_MASKED = ("mdlm", "bd3lm", "flexmdm", "partition", "gstar", "candi", "sedd", "starshape")


def classify(cfg: dict) -> dict:
    """Which codebase / algorithm a Lightning config describes, and whether it is uniform-state.

    → {'codebase', 'algorithm', 'kind': 'uniform'|'masked'|'autoregressive'|'hybrid'|'unknown',
       'time_conditioning_key'}
    """
    algo = cfg.get("algo") if isinstance(cfg.get("algo"), dict) else {}
    name = str(algo.get("name") or "").lower()
    target = str(algo.get("_target_") or "")
    leaf = target.split(".")[-1].lower()
    module = ".".join(target.split(".")[:-1]).lower()
    param = str(algo.get("parameterization", cfg.get("parameterization")) or "").lower()
    if target:  # UNI-D2: the algorithm class is named by Hydra's _target_
        algorithm = name or leaf
        if leaf == "udlm" or module.endswith(".udlm"):
            kind = "uniform"
        elif leaf == "duo" or module.endswith(".duo") or leaf.startswith("duo"):
            kind = "uniform"
        elif "gidd" in module or "gidd" in leaf:
            kind = "hybrid"
        elif leaf == "ar" or module.endswith(".ar") or "autoregressive" in module:
            kind = "autoregressive"
        elif any(m in module or m in leaf for m in _UNID2_MASKED):
            kind = "masked"
        else:
            kind = "unknown"
        return {"codebase": "uni-d2", "algorithm": algorithm, "kind": kind, "tc": "algo.time_conditioning"}
    if "diffusion" in cfg and not name:  # UDLM repository (kuleshov-group/discrete-diffusion-guidance)
        diffusion = str(cfg.get("diffusion") or "").lower()
        if param == "ar":
            kind, algorithm = "autoregressive", "ar"
        elif diffusion == "uniform":
            kind, algorithm = "uniform", "udlm"
        elif diffusion == "absorbing_state":
            kind, algorithm = "masked", "mdlm" if param == "subs" else f"absorbing-{param or '?'}"
        else:
            kind, algorithm = "unknown", diffusion or "?"
        return {"codebase": "udlm", "algorithm": algorithm, "kind": kind, "tc": "time_conditioning"}
    if name:  # Duo repository and forks (the paper authors' code is a Duo fork)
        if name == "ar" or algo.get("causal_attention") is True:
            kind = "autoregressive"
        elif name in _DUO_MASKED or param == "subs":
            kind = "masked"
        elif "duo" in name or name in ("distillation", "ot-finetune", "ot_finetune"):
            kind = "uniform"
        else:
            kind = "unknown"
        return {"codebase": "duo", "algorithm": name, "kind": kind, "tc": "algo.time_conditioning"}
    if param == "subs":
        return {"codebase": "?", "algorithm": "subs", "kind": "masked", "tc": None}
    return {"codebase": "?", "algorithm": "?", "kind": "unknown", "tc": None}


def training_layout(cfg: dict) -> str | None:
    """How the training sequences were cut, from the Duo/UDLM data config: data.wrap true (blocks
    from one token stream, e.g. lm1b-wrap, OpenWebText) → 'stream'; false (each sequence a padded
    sentence or document) → 'aligned'; absent → None (unknown)."""
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    wrap = data.get("wrap")
    return None if not isinstance(wrap, bool) else ("stream" if wrap else "aligned")


def schedule_from_config(cfg: dict, source: str):
    noise = cfg.get("noise") if isinstance(cfg.get("noise"), dict) else None
    if noise is None:
        raise LoadError(f"{source}: the config has no noise schedule (noise.type / noise._target_)")
    kind = str(noise.get("type") or noise.get("_target_") or "").lower()
    leaf = kind.split(".")[-1].replace("-", "").replace("_", "")
    eps = {} if noise.get("eps") is None else {"eps": noise["eps"]}  # no eps: the schedule's default, 1e-3
    if leaf in ("loglinear",) or leaf.startswith("loglinear"):
        return make_schedule("loglinear", source, **eps)
    if leaf.startswith("cosine"):
        return make_schedule("cosine", source, **eps)
    raise LoadError(f"{source}: unsupported noise schedule {kind!r} (memaudit implements log-linear and cosine)")


def _hyper_parameters(ckpt: dict, source: str) -> tuple[Any, dict]:
    """→ (config object, hyper-parameter dict) from ckpt['hyper_parameters'] in any of Lightning's forms."""
    hp = ckpt.get("hyper_parameters")
    if hp is None:
        raise LoadError(f"{source}: no hyper_parameters (not a Lightning checkpoint saved with save_hyperparameters)")
    if isinstance(hp, Inert) and hp.global_name.endswith("DictConfig"):
        return hp, {}
    if isinstance(hp, Inert):  # AttributeDict & co.
        hp = {**(hp.state if isinstance(hp.state, dict) else {}), **hp.items}
    if not isinstance(hp, dict):
        raise LoadError(f"{source}: hyper_parameters is a {type(hp).__name__}, expected a dict")
    config = hp.get("config", hp.get("cfg"))
    if config is None:
        raise LoadError(f"{source}: hyper_parameters has no 'config'")
    return config, hp


class LightningAdapter(Adapter):
    family = "duo/udlm/uni-d2 .ckpt"
    description = "PyTorch Lightning .ckpt (Duo, UDLM, UNI-D2, the paper authors' Duo fork)"

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        if path.suffix == ".ckpt":
            return True
        if path.suffix in (".pt", ".pth"):
            data = pickle_bytes(path)
            return bool(data) and b"hyper_parameters" in data and b"state_dict" in data
        return False

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:
        source = str(path)
        notes: list[str] = []
        ckpt = safe_load(path)
        if not isinstance(ckpt, dict):
            raise LoadError(f"{source}: not a Lightning checkpoint (top level is {global_name(ckpt) or type(ckpt).__name__})")
        state = ckpt.get("state_dict")
        if not is_tensor_dict(state):
            raise LoadError(f"{source}: no state_dict of tensors (not a Lightning checkpoint)")
        config_obj, hp = _hyper_parameters(ckpt, source)
        try:
            cfg = to_plain(config_obj)
            if not isinstance(cfg, dict):
                raise LoadError("hyper_parameters['config'] is not a mapping")
            cfg = resolve_interpolations(cfg)
        except LoadError as e:
            raise LoadError(f"{source}: {e}") from None
        info = classify(cfg)
        algorithm = info["algorithm"]
        if info["kind"] == "masked":
            raise UnsupportedCheckpoint(f"{source}: unsupported family {info['codebase']}:{algorithm}: {MASKED_REASON}")
        if info["kind"] == "autoregressive":
            raise UnsupportedCheckpoint(f"{source}: unsupported family {info['codebase']}:{algorithm}: an "
                                        f"autoregressive model is not a diffusion model")
        if info["kind"] == "hybrid":
            raise UnsupportedCheckpoint(f"{source}: unsupported family {info['codebase']}:{algorithm}: GIDD "
                                        f"training checkpoints are not supported; export to the HF format (model_type dit)")
        if info["kind"] != "uniform":
            raise LoadError(f"{source}: cannot tell which diffusion this checkpoint was trained with "
                            f"(algorithm {algorithm!r}; expected Duo algo.name, UDLM diffusion=uniform or a UNI-D2 "
                            f"algo._target_)")

        backbone = strip_prefix(state, "backbone.")
        if not backbone:
            raise LoadError(f"{source}: state_dict has no backbone.* weights")
        if any(k.startswith("cond_map.") for k in backbone):
            raise UnsupportedCheckpoint(f"{source}: unsupported: class-conditional backbone (cond_map, "
                                        f"classifier-free guidance); memaudit probes unconditional models")
        tc_raw = cfg_get(cfg, info["tc"]) if info["tc"] else None
        if tc_raw is None:
            raise LoadError(f"{source}: config has no {info['tc'] or 'time_conditioning'} field; cannot tell "
                            f"whether the network conditions on the noise level")
        time_conditioning = as_bool(tc_raw, info["tc"], source)
        if cfg_get(cfg, "subs_masking") is True or cfg_get(cfg, "algo.subs_masking") is True:
            raise UnsupportedCheckpoint(f"{source}: unsupported: subs_masking=True zeroes a mask class of a "
                                        f"uniform model; memaudit does not implement that output head")
        model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
        seq_len = model_cfg.get("length", cfg.get("model_length", model_cfg.get("max_seq_len")))
        if seq_len is None:
            raise LoadError(f"{source}: config has no model.length")
        arch = arch_from_config(backbone, cfg, {"n_heads": "model.n_heads", "seq_len": "model.length",
                                                "hidden_size": "model.hidden_size", "cond_dim": "model.cond_dim",
                                                "n_blocks": "model.n_blocks"},
                                time_conditioning=time_conditioning, source=source, seq_len=seq_len)
        declared_vocab = hp.get("vocab_size")
        if isinstance(declared_vocab, int) and not isinstance(declared_vocab, bool) and declared_vocab != arch.vocab_size:
            raise LoadError(f"{source}: vocabulary mismatch: hyper_parameters vocab_size = {declared_vocab} but "
                            f"the embedding has {arch.vocab_size} rows")
        schedule = schedule_from_config(cfg, source)

        ema = ckpt.get("ema")
        has_ema = isinstance(ema, dict) and isinstance(ema.get("shadow_params"), (list, tuple))
        if weights is None:
            weights = "raw"
        if weights == "ema":
            if not has_ema:
                raise LoadError(f"{source}: no EMA weights in this checkpoint (ckpt['ema'] is missing); use --weights raw")
            chosen, extra_shadow = ema_state(ema, backbone, source)
            if extra_shadow:
                notes.append(f"EMA list has {extra_shadow} trailing entries beyond the backbone "
                             f"(noise-schedule parameters); ignored")
        else:
            chosen = backbone
        model = build_model(arch, drop_rotary_buffers(chosen, arch, source), source)

        tokenizer, tokenizer_source = tokenizer_from_pickle(hp.get("tokenizer"))
        check_tokenizer_vocab(tokenizer, arch.vocab_size, source)
        family = {"duo": "duo", "udlm": "udlm", "uni-d2": f"uni-d2:{algorithm}"}.get(info["codebase"], algorithm)
        notes += remote_code_note(trust_remote_code)  # printed only once the load succeeded
        provenance = {
            "checkpoint": str(path.resolve()),
            "files": {path.name: file_sha256(path)},
            "format": "lightning-ckpt",
            "codebase": info["codebase"],
            "algorithm": algorithm,
            "diffusion": "uniform",
            "ema_available": has_ema,
            "weights_default": "raw",
            "tokenizer_source": tokenizer_source,
            "global_step": ckpt.get("global_step") if isinstance(ckpt.get("global_step"), int) else None,
            "lightning_version": ckpt.get("pytorch-lightning_version") if isinstance(
                ckpt.get("pytorch-lightning_version"), str) else None,
            "notes": notes,
            "training_layout": training_layout(cfg),
            **hub_provenance(path),
        }
        return Denoiser(model=model, schedule=schedule, vocab_size=arch.vocab_size, seq_len=arch.seq_len,
                        tokenizer=tokenizer, family=family, weights=weights,
                        time_input="sigma" if time_conditioning else "none",
                        provenance=provenance, config=jsonable(cfg))


__all__ = ["LightningAdapter", "classify"]
