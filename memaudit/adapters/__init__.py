"""Checkpoint loaders behind one small interface.

Each checkpoint family is one module in this package that registers an adapter:

    @register
    class MyFamily(Adapter):
        family = "my-family"
        def detect(self, path: Path) -> bool: ...          # cheap: file names / config fields
        def load(self, path: Path, weights, trust_remote_code) -> Denoiser: ...

`memaudit.load()` resolves the path, asks each adapter in registration order whether it
recognises the checkpoint, and calls the first that does. Adding a family touches one file (plus
its import line below).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..denoiser import Denoiser


class LoadError(Exception):
    """The checkpoint could not be resolved or loaded, or is unsupported (CLI exit code 4)."""


class UnsupportedCheckpoint(LoadError):
    """The checkpoint was recognised but its family cannot be probed (e.g. masked diffusion)."""


class Adapter:
    family: str = ""
    description: str = ""

    def detect(self, path: Path) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, path: Path, weights: str | None, trust_remote_code: bool) -> Denoiser:  # pragma: no cover
        raise NotImplementedError


ADAPTERS: list[Adapter] = []


def register(cls):
    ADAPTERS.append(cls())
    return cls


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve(path_or_id: str | Path) -> Path:
    """A local path always wins; anything else is a LoadError naming what was looked for."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    from . import hub  # noqa: WPS433 - optional dependency, imported on demand
    return hub.resolve_hub_id(str(path_or_id))


def detect(path: Path) -> Adapter:
    for adapter in ADAPTERS:
        try:
            if adapter.detect(path):
                return adapter
        except OSError as e:
            raise LoadError(f"cannot read {path}: {e}") from None
    families = ", ".join(a.family for a in ADAPTERS)
    raise LoadError(f"{path}: not a recognised checkpoint (supported families: {families})")


def load(path_or_id: str | Path, weights: str | None = None, trust_remote_code: bool = False,
         device: str | None = None) -> Denoiser:
    """Load any supported checkpoint as a Denoiser.

    weights: 'ema' (default where the checkpoint has EMA weights), 'raw', or None for the default.
    Never executes code from the checkpoint unless trust_remote_code=True.
    """
    if weights not in (None, "ema", "raw"):
        raise ValueError(f"weights must be 'ema', 'raw' or None, not {weights!r}")
    path = resolve(path_or_id)
    adapter = detect(path)
    denoiser = adapter.load(path, weights, trust_remote_code)
    if device is not None:
        denoiser.to(device)
    return denoiser


# Registration order is detection order: specific layouts first.
from . import native  # noqa: E402,F401
from . import lightning, sedd, hf  # noqa: E402,F401  (Lightning .ckpt, SEDD runs, HF directories)
