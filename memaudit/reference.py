"""Reference models of known regime: the demo's pair, the test fixtures, calibration anchors.

Both train the nano preset on the built-in synthetic Markov language. The memorizing one sees
32 sequences for many epochs; the generalizing one sees so many fresh sequences that it can only
learn the chain's statistics. Trained models are cached under $MEMAUDIT_CACHE (default
~/.cache/memaudit) keyed by their settings and the memaudit version, so `memaudit demo` trains
them once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

from . import __version__
from .data import default_cache_dir
from .adapters import LoadError
from .adapters.native import is_checkpoint, read_training_config
from .train import TrainConfig, train

REFERENCE_RUNS: dict[str, TrainConfig] = {
    "memorizing": TrainConfig(data="synthetic", n_train=32, preset="nano", steps=2000, batch_size=64,
                              lr=2e-3, ema_decay=0.99, seed=0),
    "generalizing": TrainConfig(data="synthetic", n_train=65536, preset="nano", steps=2000, batch_size=64,
                                lr=2e-3, ema_decay=0.99, seed=0),
}


def run_key(cfg: TrainConfig) -> str:
    blob = json.dumps({**asdict(cfg), "device": "any", "memaudit": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_reference_model(name: str, root: str | Path | None = None, show_progress: bool | None = None,
                           **overrides) -> Path:
    """Return the checkpoint directory of reference run `name`, training it first if needed."""
    if name not in REFERENCE_RUNS:
        raise KeyError(f"unknown reference run {name!r}; choose one of {', '.join(REFERENCE_RUNS)}")
    cfg = replace(REFERENCE_RUNS[name], **overrides)
    root = Path(root) if root is not None else default_cache_dir() / "reference"
    out = root / f"{name}-{run_key(cfg)}"
    if is_checkpoint(out) and _complete(out, cfg):
        return out
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    train(cfg, partial, show_progress=show_progress)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def ensure_reference_models(names: list[str], root: str | Path | None = None, parallel: bool = True,
                            show_progress: bool | None = None, **overrides) -> dict[str, Path]:
    """Several reference models at once. Small models do not scale past one core, so on a
    multi-core CPU each missing model trains in its own single-threaded process."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    missing = [n for n in names if not is_cached(n, root, **overrides)]
    workers = min(len(missing), os.cpu_count() or 1)
    if parallel and workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {n: pool.submit(_train_single_threaded, n, root, overrides) for n in missing}
            for future in futures.values():
                future.result()
    return {n: ensure_reference_model(n, root, show_progress=show_progress, **overrides) for n in names}


def _train_single_threaded(name: str, root, overrides: dict) -> str:
    import torch

    torch.set_num_threads(1)
    return str(ensure_reference_model(name, root, show_progress=False, **overrides))


def is_cached(name: str, root=None, **overrides) -> bool:
    """Whether reference model `name` is trained and in the cache (no training)."""
    cfg = replace(REFERENCE_RUNS[name], **overrides)
    root = Path(root) if root is not None else default_cache_dir() / "reference"
    out = root / f"{name}-{run_key(cfg)}"
    return is_checkpoint(out) and _complete(out, cfg)


def _complete(out: Path, cfg: TrainConfig) -> bool:
    try:
        return read_training_config(out)["steps_done"] >= cfg.steps
    except (LoadError, OSError, KeyError, ValueError):
        return False
