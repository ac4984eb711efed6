"""memaudit's own checkpoint directory.

    DIR/config.json          {"format": "memaudit", architecture, schedule, tokenizer, provenance}
    DIR/model.safetensors    raw weights, DDiT names (no prefix)
    DIR/ema.safetensors      EMA weights, same names (optional)
    DIR/tokenizer.json       tokenizers JSON (text corpora only)
    DIR/trainer_state.pt     optimizer/step/RNG for --resume (tensors and plain containers only)

Every file is written to a temporary name and renamed; config.json is written last, so a
directory with a config.json always holds a complete checkpoint.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..denoiser import Denoiser
from ..diffusion import schedule_from_dict
from ..model import DDiT, DDiTConfig
from . import Adapter, LoadError, file_sha256, register

FORMAT = "memaudit"
FORMAT_VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file next to `path`, then rename it into place: readers see the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(directory: str | Path, model: DDiT, config: dict, ema_state: dict | None = None,
                    tokenizer=None, trainer_state: dict | None = None) -> Path:
    """Write a complete native checkpoint. `config` holds everything but the architecture, which
    is taken from the model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if k != "rotary_emb.inv_freq"}
    atomic_save_tensors(directory / "model.safetensors", state, {"format": "pt"})
    if ema_state is not None:
        atomic_save_tensors(directory / "ema.safetensors", ema_state, {"format": "pt"})
    if tokenizer is not None:
        atomic_write_bytes(directory / "tokenizer.json", tokenizer.to_str().encode())
    if trainer_state is not None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".trainer_state.", suffix=".tmp")
        os.close(fd)
        torch.save(trainer_state, tmp)
        os.replace(tmp, directory / "trainer_state.pt")
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config.to_dict(),
            **config, "tokenizer": {"file": "tokenizer.json"} if tokenizer is not None else None}
    atomic_write_bytes(directory / "config.json", (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return directory


def read_config(directory: Path) -> dict:
    try:
        config = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        raise LoadError(f"{directory}: no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{directory / 'config.json'}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise LoadError(f"{directory / 'config.json'}: expected a JSON object")
    return config


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise LoadError(f"{path}: file missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LoadError(f"{path}: unreadable or truncated safetensors file ({str(e).splitlines()[0]})") from None


def load_state_into(model: DDiT, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict by-name load with one clear line for missing keys, extra keys, wrong shapes, NaNs."""
    expected = {k: v for k, v in model.state_dict().items() if k != "rotary_emb.inv_freq"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {"rotary_emb.inv_freq"})
    if missing:
        raise LoadError(f"{source}: missing weights {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    if unexpected:
        raise LoadError(f"{source}: unexpected weights {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
    for name, ref in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            hint = ""
            if name in ("vocab_embed.embedding", "output_layer.linear.weight", "output_layer.linear.bias"):
                hint = f" (vocabulary mismatch: config says {model.config.vocab_size})"
            raise LoadError(f"{source}: {name} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}{hint}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise LoadError(f"{source}: {name} contains NaN or infinite values")
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=False)


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise LoadError(f"{path}: unreadable tokenizer ({str(e).splitlines()[0]})") from None


@register
class NativeAdapter(Adapter):
    family = "memaudit"
    description = "memaudit's own directory: config.json (format=memaudit) + model.safetensors"

    def detect(self, path: Path) -> bool:
        if not path.is_dir() or not (path / "config.json").is_file():
            return False
        try:
            return read_config(path).get("format") == FORMAT
        except LoadError:
            # A broken config.json in a directory with our weight file name is still ours to report.
            return (path / "model.safetensors").exists()

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:
        config = read_config(path)
        try:
            arch = DDiTConfig.from_dict(config["model"])
            schedule = schedule_from_dict(config.get("schedule"))
        except (KeyError, TypeError, ValueError) as e:
            raise LoadError(f"{path / 'config.json'}: invalid model config ({e})") from None
        if arch.vocab_size <= 1 or arch.seq_len <= 0:
            raise LoadError(f"{path / 'config.json'}: invalid vocab_size/seq_len")
        has_ema = (path / "ema.safetensors").exists()
        if weights is None:
            weights = "ema" if has_ema else "raw"
        if weights == "ema" and not has_ema:
            raise LoadError(f"{path}: no EMA weights (ema.safetensors); use --weights raw")
        weight_file = path / ("ema.safetensors" if weights == "ema" else "model.safetensors")
        try:
            model = DDiT(arch)
        except ValueError as e:
            raise LoadError(f"{path / 'config.json'}: {e}") from None
        load_state_into(model, load_tensors(weight_file), str(weight_file))
        tokenizer = None
        if config.get("tokenizer"):
            tokenizer = load_tokenizer(path / config["tokenizer"].get("file", "tokenizer.json"))
            tok_vocab = tokenizer.get_vocab_size()
            if tok_vocab != arch.vocab_size:
                raise LoadError(f"{path}: vocabulary mismatch: tokenizer has {tok_vocab} tokens, "
                                f"model has {arch.vocab_size}")
        provenance = {
            "checkpoint": str(path.resolve()),
            "files": {weight_file.name: file_sha256(weight_file),
                      "config.json": file_sha256(path / "config.json")},
        }
        return Denoiser(model=model, schedule=schedule, vocab_size=arch.vocab_size, seq_len=arch.seq_len,
                        tokenizer=tokenizer, family=self.family, weights=weights, time_input="sigma",
                        provenance=provenance, config=config)

