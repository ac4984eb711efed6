"""Reference trainer for small uniform-state diffusion models (the UDLM NELBO).

AdamW with linear warm-up, gradient clipping, EMA of the weights, antithetic time sampling.
Training subsets are nested prefixes of one seeded permutation (memaudit.data), so a sweep over
n_train trains on growing supersets of the same examples.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .errors import UsageError
from . import __version__
from . import diffusion as D
from . import threads
from .adapters.native import (checkpoint_files, is_checkpoint, load_state_into, load_tensors, load_trainer_state,
                              read_training_config, save_checkpoint)
from .model import DDiT, preset_config
from .progress import progress_bar


class TrainError(UsageError):
    """Bad training settings or an unusable output directory (CLI exit code 2)."""


@dataclass
class TrainConfig:
    data: str = "synthetic"          # 'synthetic', 'docs', 'stdlib' or a file path
    n_train: int = 32                # training-set size in sequences (nested prefixes)
    preset: str = "nano"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0                    # model init, batches, times, noise
    data_seed: int = 0               # corpus: Markov chain / permutation of text blocks
    seq_len: int | None = None       # None: the corpus default (32 synthetic, 64 text)
    vocab_size: int | None = None    # text corpora: BPE vocabulary size (default 512)
    checkpoint_every: int = 500      # refresh the checkpoint in out_dir (for --resume) every this many steps
    save_every: int | None = None    # also keep a copy as out_dir/checkpoint-<step>/ every this many steps
    keep: int | None = None          # keep only the newest this many checkpoint-<step>/ folders (None: all)
    t_min: float = 1e-3              # smallest training time, as in Duo/UDLM
    device: str = "cpu"

    def validate(self) -> None:
        positive = {"n_train": self.n_train, "steps": self.steps, "batch_size": self.batch_size,
                    "checkpoint_every": self.checkpoint_every}
        for name, value in (("save_every", self.save_every), ("keep", self.keep)):
            if value is not None:
                positive[name] = value
        for name, value in positive.items():
            if value < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be ≥ 1 (got {value})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"--lr must be a positive number (got {self.lr})")
        if not 0 <= self.ema_decay < 1:
            raise TrainError(f"--ema-decay must be in [0, 1) (got {self.ema_decay})")


@dataclass
class TrainResult:
    out_dir: Path
    steps_done: int
    final_loss: float
    tokens_per_second: float
    wall_seconds: float
    interrupted: bool = False
    losses: list[float] = field(default_factory=list)


def lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))


def ema_update(ema: dict[str, torch.Tensor], model: DDiT, decay: float, step: int) -> None:
    # Early in training a fixed 0.999 would average in the random init; ramp the decay up.
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for name, p in model.named_parameters():
            ema[name].mul_(d).add_(p.detach(), alpha=1 - d)


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, show_progress: bool | None = None,
          corpus=None) -> TrainResult:
    """Train one model and write a native checkpoint to out_dir (periodically and at the end)."""
    from .data import load_corpus

    cfg.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainError(f"--out {out_dir} exists and is not a directory")
    if is_checkpoint(out_dir) and not resume:
        raise TrainError(f"{out_dir} already holds a checkpoint; pass --resume to continue it or choose another --out")

    device = torch.device(cfg.device)
    if corpus is None:
        corpus = load_corpus(cfg.data, seq_len=cfg.seq_len, seed=cfg.data_seed, vocab_size=cfg.vocab_size)
    train_blocks = corpus.train_blocks(cfg.n_train).to(device)         # [n, L]
    arch = preset_config(cfg.preset, vocab_size=corpus.vocab_size, seq_len=corpus.seq_len)

    torch.manual_seed(cfg.seed)
    model = DDiT(arch).to(device)
    threads.apply(sum(p.numel() for p in model.parameters()))   # the CLI's choice (memaudit.threads)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.98))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    step = 0
    if resume and checkpoint_files(out_dir)["trainer_state"].exists():
        step = _restore(out_dir, model, ema, optimizer, generator, cfg)

    schedule = D.LogLinearSchedule()
    tokens_per_step = cfg.batch_size * corpus.seq_len
    losses: list[float] = []
    interrupted = False
    start = time.perf_counter()
    start_step = step

    def checkpoint() -> None:
        provenance = {
            "schedule": schedule.to_dict(),
            "data": corpus.spec,
            "training": {**asdict(cfg), "steps_done": step, "final_loss": _recent_mean(losses)},
            "memaudit_version": __version__,
            "torch_version": torch.__version__,
        }
        trainer_state = {"step": step, "optimizer": optimizer.state_dict(),
                         "generator": generator.get_state(), "train_config": asdict(cfg)}
        timing = {"steps_done": step, "tokens_per_second": _throughput(step - start_step, tokens_per_step, start),
                  "wall_seconds": time.perf_counter() - start}
        save_checkpoint(out_dir, model, provenance, ema_state=ema, tokenizer=corpus.tokenizer,
                        trainer_state=trainer_state, timing=timing)

    model.train()
    try:
        with progress_bar("training", total=cfg.steps, enabled=show_progress, unit="steps",
                          extra="loss {task.fields[loss]:.4f} · {task.fields[tok_s]:.0f} tok/s") as task:
            task.advance(step)
            while step < cfg.steps:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg)
                idx = torch.randint(0, train_blocks.shape[0], (cfg.batch_size,), generator=generator, device=device)
                x0 = train_blocks[idx]                                               # [B, L]
                t = D.sample_times(cfg.batch_size, cfg.t_min, generator=generator, device=device)
                alpha = schedule.alpha(t)
                x_t = D.corrupt(x0, alpha, corpus.vocab_size, generator=generator)
                log_probs = torch.log_softmax(model(x_t, schedule.sigma(t)), dim=-1)  # [B, L, V]
                loss = D.nelbo_per_token(log_probs, x0, x_t, alpha, schedule.dalpha_dt(t)).mean()
                if not torch.isfinite(loss):
                    raise TrainError(f"loss became {loss.item()} at step {step}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                ema_update(ema, model, cfg.ema_decay, step)
                step += 1
                losses.append(loss.item())
                task.advance(1, loss=_recent_mean(losses),
                             tok_s=_throughput(step - start_step, tokens_per_step, start))
                if cfg.save_every is not None and step % cfg.save_every == 0 and step < cfg.steps:
                    checkpoint()
                    save_series_checkpoint(out_dir, step, cfg.keep)
                elif step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    checkpoint()
    except KeyboardInterrupt:
        interrupted = True
    checkpoint()
    if cfg.save_every is not None and not interrupted:
        save_series_checkpoint(out_dir, step, cfg.keep)
    return TrainResult(out_dir=out_dir, steps_done=step, final_loss=_recent_mean(losses),
                       tokens_per_second=_throughput(step - start_step, tokens_per_step, start),
                       wall_seconds=time.perf_counter() - start, interrupted=interrupted, losses=losses)


SERIES_PREFIX = "checkpoint-"


def series_checkpoints(out_dir: str | Path) -> list[Path]:
    """The checkpoint-<step>/ folders of a training run, by step."""
    found = [(int(p.name[len(SERIES_PREFIX):]), p) for p in Path(out_dir).glob(SERIES_PREFIX + "*")
             if p.is_dir() and p.name[len(SERIES_PREFIX):].isdigit()]
    return [p for _, p in sorted(found)]


def save_series_checkpoint(out_dir: Path, step: int, keep: int | None = None) -> Path:
    """Copy the complete checkpoint just written to out_dir (config, weights, EMA, tokenizer,
    trainer state) into out_dir/checkpoint-<step>/, atomically (a staging folder renamed into
    place), then drop the oldest series folders beyond `keep`. Each folder is a checkpoint that
    `scan` reads and `train --resume --out` continues."""
    import os
    import shutil

    target = out_dir / f"{SERIES_PREFIX}{step}"
    staging = out_dir / f".{SERIES_PREFIX}{step}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for path in checkpoint_files(out_dir).values():
        if path.is_file():
            shutil.copy2(path, staging / path.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    if keep is not None:
        for old in series_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old)
    return target


def _restore(out_dir: Path, model, ema, optimizer, generator, cfg: TrainConfig) -> int:
    saved_cfg = read_training_config(out_dir)
    for key in ("data", "n_train", "preset", "seed", "data_seed", "batch_size"):
        if key in saved_cfg and saved_cfg[key] != getattr(cfg, key):
            raise TrainError(f"--resume: {key} differs from the checkpoint in {out_dir} "
                             f"({getattr(cfg, key)!r} vs {saved_cfg[key]!r})")
    files = checkpoint_files(out_dir)
    load_state_into(model, load_tensors(files["model"]), str(files["model"]))
    ema_saved = load_tensors(files["ema"])
    for name in ema:
        ema[name].copy_(ema_saved[name])
    state = load_trainer_state(out_dir)
    try:
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        from .adapters import LoadError

        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"{checkpoint_files(out_dir)['trainer_state']}: the saved optimizer or RNG state does not "
                        f"fit this run ({first[:200]})") from None
    return int(state["step"])


def _recent_mean(losses: list[float], window: int = 50) -> float:
    recent = losses[-window:]
    return float(sum(recent) / len(recent)) if recent else float("nan")


def _throughput(steps: int, tokens_per_step: int, start: float) -> float:
    elapsed = time.perf_counter() - start
    return steps * tokens_per_step / elapsed if elapsed > 0 else 0.0
