"""Checkpoints of families memaudit does not load natively, through their own modeling code —
only with `--trust-remote-code`.

Recognised: a Hugging Face folder whose config.json has an `auto_map` (the classes of its own
`modeling_*.py`) and a `model_type` that no native adapter loads. Without the flag it is refused
(exit 4) before anything of it is imported. With the flag, `transformers` loads the class
`auto_map` names (AutoModelForMaskedLM, else AutoModel) with `trust_remote_code=True`, and memaudit
wraps it as a Denoiser:

* the network is called as `forward(<first argument>=tokens, <time argument>=time features)`,
  the time argument found by name in its signature (`timesteps`, `sigma`, `t`, `time`, `noise`);
* what it is fed and how noise is scheduled come from the config (`time_input: sigma|t|none`,
  `time_conditioning: false` → none; `noise_schedule` / `schedule` / `noise` with a log-linear
  `eps`) or from the user (`--time-input`, `--schedule loglinear[:EPS]`); what neither says is
  refused;
* a probe batch checks that it returns finite x0 logits `[B, L, V]` over the config's vocabulary,
  and that it is not a masked-diffusion model (whose x0 prediction copies its input exactly).

Every report of such a model carries `modeling_code: checkpoint` and the note "modeling code from
the checkpoint was executed".
"""
from __future__ import annotations

import inspect as pyinspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..denoiser import Denoiser
from ..diffusion import check_eps, log_softmax_
from . import Adapter, LoadError, UnsupportedCheckpoint, check_memory, file_sha256, read_json
from .common import MASKED_REASON, as_float, hub_provenance, jsonable, make_schedule, quiet_transformers

# model_types a native adapter loads or refuses with its own reason (hf.py); never remote code.
NATIVE_MODEL_TYPES = ("udlm", "duo", "dit", "mdlm", "gidd")
TIME_INPUTS = ("sigma", "t", "none")
TIME_ARGUMENT_NAMES = ("timesteps", "sigma", "t", "time", "noise", "sigmas", "timestep")
MODEL_CLASSES = ("AutoModelForMaskedLM", "AutoModel")
LENGTH_KEYS = ("model_length", "max_seq_len", "seq_len", "length", "max_position_embeddings")
REMOTE_CODE_MARK = "modeling code from the checkpoint was executed"


def parse_schedule(text: str) -> dict:
    """`loglinear` or `loglinear:EPS` → a schedule dict for diffusion.schedule_from_dict."""
    name, _, eps = text.strip().partition(":")
    if name.replace("-", "").replace("_", "").lower() != "loglinear":
        raise ValueError(f"--schedule must be loglinear or loglinear:EPS, not {text!r}")
    if not eps:
        return {"name": "loglinear"}
    return {"name": "loglinear", "eps": check_eps(eps, "--schedule eps")}


def _is_masked(cfg: dict) -> bool:
    kind = str(cfg.get("model_type") or "").lower()
    return (any(word in kind for word in ("mdlm", "masked", "absorb", "bd3lm"))
            or str(cfg.get("diffusion") or "").lower() in ("absorbing_state", "absorbing", "masked")
            or str(cfg.get("parameterization") or "").lower() == "subs")


def _time_input(cfg: dict, stated: str | None, source: str) -> tuple[str, str]:
    if stated is not None:
        return stated, "--time-input"
    declared = cfg.get("time_input")
    if isinstance(declared, str) and declared.lower() in TIME_INPUTS:
        return declared.lower(), "config.json time_input"
    if cfg.get("time_conditioning") is False:
        return "none", "config.json time_conditioning: false"
    raise LoadError(f"{source}: cannot tell what time input its network takes (config.json has no time_input "
                    f"or time_conditioning: false); state it with --time-input sigma|t|none")


def _schedule(cfg: dict, stated: str | None, source: str):
    if stated is not None:
        try:
            spec = parse_schedule(stated)
        except ValueError as e:
            raise LoadError(f"{source}: {e}") from None
        return make_schedule(spec.pop("name"), source, where="--schedule", **spec), "--schedule"
    for key in ("noise_schedule", "schedule", "noise"):
        entry = cfg.get(key)
        if isinstance(entry, str):
            entry = {"type": entry}
        if isinstance(entry, dict):
            name = str(entry.get("name") or entry.get("type") or "")
            if name.replace("-", "").replace("_", "").lower() == "loglinear":
                eps = {} if entry.get("eps") is None else {"eps": as_float(entry["eps"], f"{key}.eps", source)}
                return make_schedule("loglinear", source, where=f"config.json {key}", **eps), f"config.json {key}"
            raise LoadError(f"{source}: config.json {key} {name or entry!r:.60} is not a schedule memaudit "
                            f"implements for remote code (loglinear); state it with --schedule loglinear[:EPS]")
    raise LoadError(f"{source}: cannot tell its noise schedule (config.json has no noise_schedule); state it "
                    f"with --schedule loglinear[:EPS]")


def _seq_len(cfg: dict, source: str) -> int:
    for key in LENGTH_KEYS:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            from ..model import MAX_SEQ_LEN

            if value > MAX_SEQ_LEN:
                raise LoadError(f"{source}: {key} = {value} is longer than the {MAX_SEQ_LEN} tokens memaudit accepts")
            return value
    raise LoadError(f"{source}: config.json states no sequence length ({', '.join(LENGTH_KEYS)})")


def _forward_arguments(model, time_input: str, source: str) -> tuple[str, str | None]:
    """(name of the token argument, name of the time argument or None) of `model.forward`."""
    params = [p for p in pyinspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not params:
        raise LoadError(f"{source}: the network's forward takes no token argument")
    time_arg = next((p.name for p in params[1:] if p.name in TIME_ARGUMENT_NAMES), None)
    if time_arg is None and time_input != "none":
        raise LoadError(f"{source}: the network's forward({', '.join(p.name for p in params)}) has no time "
                        f"argument ({', '.join(TIME_ARGUMENT_NAMES)}); it cannot take time input {time_input!r}")
    return params[0].name, time_arg


def _logits(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if getattr(output, "logits", None) is not None:
        return output.logits
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


@dataclass
class RemoteCodeDenoiser(Denoiser):
    """A network from the checkpoint's own modeling code: called by its own argument names."""

    token_argument: str = "input_ids"
    time_argument: str | None = "timesteps"

    def call_network(self, tokens: torch.Tensor, t: torch.Tensor):
        kwargs = {self.token_argument: tokens}
        if self.time_argument is not None:
            kwargs[self.time_argument] = self.time_features(t)
        return _logits(self.model(**kwargs))

    def log_probs(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return log_softmax_(self.call_network(tokens, t).float().contiguous())

    def architecture(self) -> dict:
        cfg = getattr(self.model, "config", None)
        return {"class": f"{type(self.model).__module__}.{type(self.model).__name__}",
                "model_type": getattr(cfg, "model_type", None), "output_classes": self.vocab_size}


class RemoteCodeAdapter(Adapter):
    family = "remote code (--trust-remote-code)"
    description = "Hugging Face folder with its own modeling code (config.json auto_map), run only with --trust-remote-code"
    runs_checkpoint_code = True

    def detect(self, path: Path) -> bool:
        from .common import folder_config

        cfg = folder_config(path)
        if cfg is None:
            return False
        return (isinstance(cfg.get("auto_map"), dict) and bool(cfg["auto_map"])
                and str(cfg.get("model_type") or "").lower() not in NATIVE_MODEL_TYPES
                and not ("graph" in cfg and "tokens" in cfg))

    def load(self, path: Path, weights: str | None, trust_remote_code: bool, time_input: str | None = None,
             schedule: str | None = None) -> Denoiser:
        source = str(path)
        cfg = read_json(path / "config.json")
        model_type = str(cfg.get("model_type") or "(none)")
        auto_map = cfg["auto_map"]
        if not trust_remote_code:
            raise LoadError(f"{source}: model_type {model_type!r} is not a family memaudit loads natively; the "
                            f"checkpoint ships its own modeling code (auto_map {', '.join(sorted(auto_map))}), which "
                            f"memaudit runs only with --trust-remote-code")
        if _is_masked(cfg):
            raise UnsupportedCheckpoint(f"{source}: unsupported family {model_type}: {MASKED_REASON}")
        chosen_time, time_from = _time_input(cfg, time_input, source)
        chosen_schedule, schedule_from = _schedule(cfg, schedule, source)
        seq_len = _seq_len(cfg, source)
        if weights not in (None, "raw"):
            raise LoadError(f"{source}: a checkpoint loaded through its own modeling code has one weight set; "
                            f"use --weights raw")
        kind = next((k for k in MODEL_CLASSES if k in auto_map), None)
        if kind is None:
            raise LoadError(f"{source}: auto_map names no model class memaudit can load ({', '.join(MODEL_CLASSES)}); "
                            f"found {', '.join(sorted(auto_map))}")
        weight_files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
        check_memory(sum(p.stat().st_size for p in weight_files), "reading the weight files", source)
        try:
            import transformers
        except ImportError:
            raise LoadError(f"{source}: loading a checkpoint's own modeling code needs transformers "
                            f"(pip install 'memaudit-dlm[hub]')") from None
        try:
            with quiet_transformers():
                model = getattr(transformers, kind).from_pretrained(str(path), trust_remote_code=True,
                                                                    local_files_only=True)
        except Exception as e:  # noqa: BLE001 - the checkpoint's code can raise anything; one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoadError(f"{source}: its modeling code could not load the model ({type(e).__name__}: {first})") from None
        model = model.float().eval()
        token_arg, time_arg = _forward_arguments(model, chosen_time, source)
        declared_vocab = cfg.get("vocab_size")
        vocab = declared_vocab if isinstance(declared_vocab, int) and not isinstance(declared_vocab, bool) else None
        code_files = sorted(p.name for p in path.iterdir() if p.suffix == ".py")
        files = {name: file_sha256(path / name) for name in ["config.json", *code_files, *(p.name for p in weight_files)]}
        notes = [f"{REMOTE_CODE_MARK} ({', '.join(code_files) or 'its auto_map classes'}: {auto_map[kind]})",
                 f"time input {chosen_time} ({time_from}); noise schedule {chosen_schedule.to_dict()} ({schedule_from})"]
        provenance = {
            "checkpoint": str(path.resolve()), "files": files, "format": "hf-remote-code", "codebase": model_type,
            "algorithm": model_type, "diffusion": "uniform (not checked: stated by the config or the user)",
            "ema_available": False, "weights_default": "raw", "modeling_code": "checkpoint",
            "remote_code": {"class": auto_map[kind], "loaded_as": kind, "files": code_files,
                            "time_input_from": time_from, "schedule_from": schedule_from},
            "output": "x0 log-probabilities: log_softmax of the checkpoint network's logits",
            "notes": notes, **hub_provenance(path),
        }
        denoiser = RemoteCodeDenoiser(model=model, schedule=chosen_schedule, vocab_size=vocab or 0, seq_len=seq_len,
                                      family=f"remote:{model_type}", weights="raw", time_input=chosen_time,
                                      provenance=provenance, config=jsonable(cfg), token_argument=token_arg,
                                      time_argument=time_arg)
        denoiser.vocab_size = probe_output(denoiser, vocab, source)
        from ..progress import console

        console.print(f"[yellow]memaudit:[/] {REMOTE_CODE_MARK} ({source})", highlight=False, soft_wrap=True)
        return denoiser


def probe_output(denoiser: RemoteCodeDenoiser, vocab: int | None, source: str) -> int:
    """Run the network on a probe batch: it must return finite logits [B, L, V] (V the config's
    vocab_size when it states one) and must not copy its input (masked diffusion). → V."""
    n_classes = vocab or 2
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, n_classes, (2, denoiser.seq_len), generator=g)
    t = torch.tensor([0.3, 0.7])
    try:
        with torch.inference_mode():
            logits = denoiser.call_network(tokens, t)
    except Exception as e:  # noqa: BLE001 - the checkpoint's code can raise anything; one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"{source}: its network failed on a probe batch ({type(e).__name__}: {first})") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(tokens.shape):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise LoadError(f"{source}: its network returned {shape} for tokens {tuple(tokens.shape)}; memaudit needs "
                        f"x0 logits [batch, length, vocabulary]")
    if vocab is not None and logits.shape[-1] != vocab:
        raise LoadError(f"{source}: vocabulary mismatch: the network outputs {logits.shape[-1]} classes, "
                        f"config.json vocab_size = {vocab}")
    if not bool(torch.isfinite(logits).all()):
        raise LoadError(f"{source}: its network returned NaN or infinite logits on a probe batch")
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    own = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if bool((own == 0).all()):
        raise UnsupportedCheckpoint(f"{source}: unsupported: its x0 prediction copies every input token exactly "
                                    f"(a masked-diffusion parameterisation); {MASKED_REASON}")
    return int(logits.shape[-1])


__all__ = ["RemoteCodeAdapter", "RemoteCodeDenoiser", "REMOTE_CODE_MARK", "parse_schedule"]
