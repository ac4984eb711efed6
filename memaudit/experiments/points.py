"""One point of a sweep (one training-set size) and its lifecycle: train it (or reuse / resume its
checkpoint), recover and scan it, write point.json; find finished (or truncated) points again.

    OUT/points/n000064/checkpoint/     native checkpoint (memaudit train), resumable
    OUT/points/n000064/recovery/       recovery.parquet + summary.json (memaudit recover, auto data)
    OUT/points/n000064/scan/           samples.parquet + summary.json (memaudit scan)
    OUT/points/n000064/point.json      the point's results (statistics, per-sample arrays, timings)

A point is finished when its point.json exists with the current settings' keys and its checkpoint
has all its steps.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import __version__
from .settings import POINT_FORMAT, TRAIN_KEYS, SweepError, SweepSettings, settings_from_dict, settings_key, train_key


def point_dir(out: Path, n: int) -> Path:
    return Path(out) / "points" / f"n{n:07d}"


def checkpoint_state(ckpt: Path, cfg) -> str:
    """'missing', 'complete', 'partial' (resumable) or 'mismatch' (other settings)."""
    config_file = ckpt / "config.json"
    if not config_file.exists():
        return "missing"
    try:
        saved = json.loads(config_file.read_text())["training"]
    except (OSError, KeyError, ValueError):
        return "mismatch"
    want = asdict(cfg)
    if any(saved.get(k) != want[k] for k in TRAIN_KEYS):
        return "mismatch"
    done = int(saved.get("steps_done", 0))
    if done == cfg.steps:
        return "complete"
    if done < cfg.steps and (ckpt / "trainer_state.pt").exists():
        return "partial"
    return "mismatch"


def point_finished(out: Path, settings: SweepSettings, n: int) -> bool:
    pdir = point_dir(out, n)
    cfg = settings.train_config(n)
    try:
        doc = json.loads((pdir / "point.json").read_text())
    except (OSError, ValueError):
        return False
    return (doc.get("train_key") == train_key(cfg) and doc.get("eval_key") == settings_key(settings.eval_settings())
            and checkpoint_state(pdir / "checkpoint", cfg) == "complete")


def run_point(settings: SweepSettings, out: Path, n: int, report=None, allow_truncated: bool = False) -> dict:
    """Train (or reuse / resume) one point, then recover and scan it; write its reports and
    point.json (evaluate_point, then write_point_files). → the point.json document."""
    doc, files = evaluate_point(settings, out, n, report=report, allow_truncated=allow_truncated)
    write_point_files(files)
    (report or (lambda phase, **info: None))("done", recovery=doc["recovery"]["verdict"], scan=doc["scan"]["verdict"],
                                             truncated=doc["truncated"])
    return doc


def write_point_files(files: dict[str, dict[str, bytes]]) -> None:
    """The files of one point ({directory: {name: bytes}}), each directory's set atomically and
    point.json's directory last: a point is finished only once everything beside it is written."""
    from ..report import write_files

    for directory, named in sorted(files.items(), key=lambda item: len(Path(item[0]).parts), reverse=True):
        write_files(directory, named)


def point_task(settings_dict: dict, out: str, n: int) -> dict:
    """One point as a task of a backend (memaudit.experiments.backends): trains into the point's
    checkpoint directory (which on a cluster lies on storage every node reaches) and returns the
    point's report files as bytes for the driver to write. → {"doc": point.json, "files": …}."""
    doc, files = evaluate_point(settings_from_dict(settings_dict), Path(out), n)
    return {"doc": doc, "files": files}


def evaluate_point(settings: SweepSettings, out: Path, n: int, report=None,
                   allow_truncated: bool = False) -> tuple[dict, dict[str, dict[str, bytes]]]:
    """Train (or reuse / resume) one point, then recover and scan it; nothing but the checkpoint
    is written. → (point.json document, {directory: {name: bytes}} of its report files).

    report(phase, **info) is called at phase changes ('training', 'recovering', 'scanning', 'done').
    allow_truncated: when training is interrupted (Ctrl-C, or the sweep's deadline), evaluate the
    checkpoint as it is and mark the point truncated instead of giving up. A truncated point is a
    valid calibration point (recovery and scan measure the same model) but not a finished one: the
    next sweep resumes its training."""
    import signal

    import torch

    from ..adapters import load
    from ..adapters.native import read_training_timing
    from ..data import corpus_from_spec
    from ..probe import scan
    from ..recovery import recover
    from ..report import json_bytes, recovery_files, render_report
    from ..train import train
    from ..progress import nested

    report = report or (lambda phase, **info: None)
    pdir = point_dir(out, n)
    ckpt = pdir / "checkpoint"
    cfg = settings.train_config(n)
    state = checkpoint_state(ckpt, cfg)
    if state == "mismatch":
        raise SweepError(f"{ckpt} holds a checkpoint trained with other settings; remove it or choose another --out")
    timings = {}
    trained_now = state != "complete"
    truncated = False
    if trained_now:
        report("training", steps=cfg.steps)
        started = time.perf_counter()
        result = train(cfg, ckpt, resume=(state == "partial"), show_progress=nested())
        timings["train_s"] = time.perf_counter() - started
        if result.interrupted:
            if not allow_truncated:
                raise KeyboardInterrupt
            truncated = True
    if allow_truncated:
        # From here on a second interrupt must not lose the evaluation of what was trained.
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
    saved = json.loads((ckpt / "config.json").read_text())
    training = {**saved["training"], **read_training_timing(ckpt)}

    report("recovering", steps_done=training.get("steps_done"))
    started = time.perf_counter()
    denoiser = load(ckpt, weights=settings.weights, device=settings.device)
    rec = recover(denoiser, "auto", "auto", t0=settings.t0, n=settings.recover_n,
                  steps_per_unit=settings.steps_per_unit, seed=settings.seed, show_progress=nested())
    files = {str(pdir / "recovery"): recovery_files(rec)}
    timings["recover_s"] = time.perf_counter() - started

    report("scanning")
    started = time.perf_counter()
    # all samples (no adaptive stop): the tables keep per-sample values, so that any rule, and the
    # adaptive stopping rule itself, can be replayed on them later
    sc = scan(denoiser, samples=settings.scan_samples, steps=settings.scan_steps, seed=settings.seed,
              t_profile=tuple(settings.t_profile), show_progress=nested(), adaptive=False)
    files[str(pdir / "scan")] = render_report(sc, names=["samples.parquet", "summary.json"])
    timings["scan_s"] = time.perf_counter() - started
    raw_scan = None
    if settings.scan_raw and (ckpt / "model.safetensors").exists() and denoiser.weights != "raw":
        raw = load(ckpt, weights="raw", device=settings.device)
        rs = scan(raw, samples=settings.scan_samples, steps=settings.scan_steps, seed=settings.seed,
                  show_progress=False, adaptive=False)
        raw_scan = {"verdict": rs.verdict, "reason": rs.reason,
                    **{k: rs.stats[k] for k in ("mean_entropy", "mean_entropy_ci", "near_zero_sample_fraction",
                                                 "duplicate_rate", "fixed_point_fraction", "entropy_ratio")}}

    corpus = corpus_from_spec(saved["data"], tokenizer=denoiser.tokenizer)
    stored = {row.tobytes() for row in corpus.train_blocks(n).numpy().astype(np.int64)}
    train_copy = np.array([row.astype(np.int64).tobytes() in stored for row in sc.tokens], dtype=bool)
    doc = {
        "format": POINT_FORMAT,
        "n_train": int(n),
        "train_key": train_key(cfg),
        "eval_key": settings_key(settings.eval_settings()),
        "truncated": truncated,
        "settings": settings.to_dict(),
        "training": {k: training.get(k) for k in ("steps", "steps_done", "final_loss", "tokens_per_second",
                                                   "wall_seconds", "lr", "batch_size", "preset", "data")},
        "corpus": saved["data"],
        "vocab_size": int(denoiser.vocab_size),
        "seq_len": int(denoiser.seq_len),
        "n_parameters": denoiser.describe().get("n_parameters"),
        "weights": denoiser.weights,
        "recovery": {"verdict": rec.verdict, "reason": rec.reason, "explanation": rec.explanation,
                     "summaries": rec.summaries, "gaps": rec.gaps},
        **scan_record(sc, train_copy),
        "train_copy_rate": float(train_copy.mean()),
        "scan_raw": raw_scan,
        "trained_now": trained_now,
        "timings": timings,
        "device": settings.device,
        "torch_version": torch.__version__,
        "memaudit_version": __version__,
    }
    files[str(pdir)] = {"point.json": json_bytes(doc)}
    return doc, files

def scan_record(sc, train_copy) -> dict:
    """The "scan" and "samples" parts of point.json from a ScanResult (per-sample values rounded
    for storage); train_copy [N]: whether each sample is a training block (None: unknown)."""
    sample_means = sc.entropy.astype(np.float64).mean(axis=2)                    # [T, N]
    return {
        "scan": {"verdict": sc.verdict, "reason": sc.reason, "rule": sc.rule.name,
                 "stats": dict(sc.stats), "steps": sc.settings.steps, "seed": sc.settings.seed,
                 "t_values": [float(t) for t in sc.t_values], "tau": sc.settings.tau,
                 "bootstrap_resamples": sc.settings.bootstrap_resamples, "confidence": sc.settings.confidence},
        "samples": {"mean_entropy": [[round(float(v), 7) for v in row] for row in sample_means],
                    "duplicate_of": [int(v) for v in sc.duplicate_of],
                    "is_fixed_point": [bool(v) for v in sc.is_fixed_point],
                    "fixed_point_distance": [round(float(v), 6) for v in sc.fixed_point_distance],
                    "basin_agreement": [round(float(v), 6) for v in sc.basin_agreement],
                    "near_copies_earlier": [int(v) for v in sc.near_copies_earlier],
                    "near_copy_fraction": sc.stats.get("near_copy_fraction"),
                    "tokens": [[int(v) for v in row] for row in sc.tokens],
                    "is_train_copy": None if train_copy is None else [bool(v) for v in train_copy]},
    }


def load_points(out: Path, settings: SweepSettings, include_truncated: bool = False) -> dict[int, dict]:
    """Finished points (and, with include_truncated, points whose training was cut at a deadline
    but which were evaluated as they are)."""
    points = {}
    for n in settings.sizes:
        if point_finished(out, settings, n):
            points[n] = json.loads((point_dir(out, n) / "point.json").read_text())
        elif include_truncated:
            try:
                doc = json.loads((point_dir(out, n) / "point.json").read_text())
            except (OSError, ValueError):
                continue
            cfg = settings.train_config(n)
            ckpt_steps = steps_done(point_dir(out, n) / "checkpoint")
            if (doc.get("truncated") and doc.get("eval_key") == settings_key(settings.eval_settings())
                    and doc.get("train_key") == train_key(cfg) and ckpt_steps == doc["training"].get("steps_done")):
                points[n] = doc
    return points


def steps_done(ckpt: Path):
    try:
        return json.loads((ckpt / "config.json").read_text())["training"]["steps_done"]
    except (OSError, KeyError, ValueError):
        return None

def prepare_corpus(settings: SweepSettings) -> None:
    """Build the corpus once in this process, so parallel workers find the tokenizer and the token
    ids in the cache instead of each extracting and training them."""
    from ..data import load_corpus

    load_corpus(settings.data, seq_len=settings.seq_len, seed=settings.data_seed, vocab_size=settings.vocab_size)
