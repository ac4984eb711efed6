"""The transition experiment: train at several training-set sizes, recover and scan each point.

    sweep(SweepSettings(sizes=(8, 64, 512, 4096, 65536), data="synthetic", preset="nano"), out)

Layout of a sweep directory (everything written atomically; a point is finished when its
point.json exists with the current settings' keys and its checkpoint has all its steps):

    OUT/points/n000064/checkpoint/     native checkpoint (memaudit train), resumable
    OUT/points/n000064/recovery/       recovery.parquet + summary.json (memaudit recover, auto data)
    OUT/points/n000064/scan/           samples.parquet + summary.json (memaudit scan)
    OUT/points/n000064/point.json      the point's results (statistics, per-sample arrays, timings)
    OUT/sweep.parquet                  tidy table: one row per size × split × t0, plus scan columns
    OUT/*.png, OUT/index.html          plots; index.html embeds them (self-contained)

Training sets are nested prefixes of one permutation (memaudit.data), so a sweep varies only the
amount of data. The training budget grows with n_train (AUTO_STEPS): a fixed budget leaves the
large points undertrained (research/feasibility.md). Points train in parallel processes
(`workers`), each single-threaded on the CPU; on CUDA the processes share the GPU.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UsageError
from . import __version__
from .recovery import DEFAULT_STEPS_PER_UNIT, DEFAULT_T0

# Default sweep: built-in synthetic language, nano preset. Sized to finish in ≤ 30 min on 2 CPU
# cores with 2 workers (docs/transition.md records the measurement).
DEFAULT_SIZES = (8, 64, 512, 4096, 65536)
# Training budget: AUTO_BASE steps at n ≤ AUTO_N0, growing as (n / AUTO_N0)^(1/3), capped at
# AUTO_CAP. Memorizing a larger set needs more steps; past the capacity of the model the budget
# only has to learn the language, which takes a size-independent number of steps.
AUTO_BASE = 1000
AUTO_N0 = 8
AUTO_EXPONENT = 1 / 3
AUTO_CAP = 3000
DEFAULT_T_PROFILE = (0.01, 0.05, 0.1, 0.25)
PRIMARY_T0 = 0.25
POINT_FORMAT = 2
FAIL_FAST = 3   # this many failures before any success stop a parallel sweep: something is broken


class SweepError(UsageError):
    """Bad sweep settings or an unusable sweep directory (CLI exit code 2)."""


# ------------------------------------------------------------------------------------- settings
def parse_int_list(text: str, what: str = "--sizes") -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise SweepError(f"{what} must be comma-separated integers (got {text!r})") from None
    if not values or any(v < 1 for v in values):
        raise SweepError(f"{what} needs at least one value, all ≥ 1 (got {text!r})")
    if len(set(values)) != len(values):
        raise SweepError(f"{what} values must be distinct (got {text!r})")
    return tuple(sorted(values))


def parse_float_list(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise SweepError(f"{what} must be comma-separated numbers (got {text!r})") from None
    if not values:
        raise SweepError(f"{what} needs at least one value")
    return values


def auto_steps(n: int, base: int = AUTO_BASE, n0: int = AUTO_N0, exponent: float = AUTO_EXPONENT,
               cap: int = AUTO_CAP) -> int:
    raw = base * max(1.0, n / n0) ** exponent
    return int(min(cap, max(base, round(raw / 100) * 100)))


def steps_schedule(spec: str | int, sizes, scale: float = 1.0, cap: int = AUTO_CAP) -> dict[int, int]:
    """Training steps per size. spec: 'auto' (AUTO_* formula with `cap`), an integer (the same for
    every size), or 'SIZE:STEPS,…' (log-linear interpolation in size between the listed points,
    constant beyond them). `scale` multiplies the result."""
    spec = str(spec).strip()
    if spec == "auto":
        table = {n: auto_steps(n, cap=cap) for n in sizes}
    elif ":" in spec:
        try:
            knots = sorted((int(a), int(b)) for a, b in (p.split(":") for p in spec.split(",") if p))
        except ValueError:
            raise SweepError(f"--steps must be 'auto', an integer or 'SIZE:STEPS,…' (got {spec!r})") from None
        if not knots or any(s < 1 or n < 1 for n, s in knots):
            raise SweepError(f"--steps knots must be positive (got {spec!r})")
        xs = np.log([n for n, _ in knots])
        ys = np.array([s for _, s in knots], dtype=np.float64)
        table = {n: int(round(float(np.interp(math.log(n), xs, ys)))) for n in sizes}
    else:
        try:
            steps = int(spec)
        except ValueError:
            raise SweepError(f"--steps must be 'auto', an integer or 'SIZE:STEPS,…' (got {spec!r})") from None
        table = {n: steps for n in sizes}
    if any(s < 1 for s in table.values()):
        raise SweepError(f"every point needs at least one training step (--steps {spec!r})")
    return {n: max(1, int(round(s * scale))) for n, s in table.items()}


@dataclass(frozen=True)
class SweepSettings:
    sizes: tuple[int, ...] = DEFAULT_SIZES
    data: str = "synthetic"
    preset: str = "nano"
    steps: str = "auto"
    steps_scale: float = 1.0
    steps_cap: int = AUTO_CAP
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.99
    seed: int = 0
    data_seed: int = 0
    seq_len: int | None = None
    vocab_size: int | None = None
    t0: tuple[float, ...] = DEFAULT_T0
    recover_n: int = 256
    steps_per_unit: int = DEFAULT_STEPS_PER_UNIT
    scan_samples: int = 256
    scan_steps: int | None = None
    t_profile: tuple[float, ...] = DEFAULT_T_PROFILE
    weights: str | None = None
    scan_raw: bool = False            # also scan the raw (non-EMA) weights, for the EMA-vs-raw comparison
    device: str = "cpu"

    def validate(self) -> None:
        from .model import PRESETS

        if self.preset not in PRESETS:
            raise SweepError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise SweepError("--sizes needs positive training-set sizes")
        if self.weights not in (None, "ema", "raw"):
            raise SweepError("--weights must be ema or raw")
        if self.recover_n < 1 or self.scan_samples < 1:
            raise SweepError("--recover-n and --samples must be ≥ 1")
        if self.steps_scale <= 0:
            raise SweepError("--steps-scale must be > 0")
        self.schedule()

    def schedule(self) -> dict[int, int]:
        return steps_schedule(self.steps, self.sizes, self.steps_scale, self.steps_cap)

    def train_config(self, n: int):
        from .train import TrainConfig

        return TrainConfig(data=self.data, n_train=int(n), preset=self.preset, steps=self.schedule()[n],
                           batch_size=self.batch_size, lr=self.lr, warmup=self.warmup, ema_decay=self.ema_decay,
                           seed=self.seed, data_seed=self.data_seed, seq_len=self.seq_len,
                           vocab_size=self.vocab_size, checkpoint_every=500, device=self.device)

    def eval_settings(self) -> dict:
        return {"t0": list(self.t0), "recover_n": self.recover_n, "steps_per_unit": self.steps_per_unit,
                "scan_samples": self.scan_samples, "scan_steps": self.scan_steps, "t_profile": list(self.t_profile),
                "weights": self.weights, "seed": self.seed, "point_format": POINT_FORMAT, "scan_raw": self.scan_raw}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sizes"], d["t0"], d["t_profile"] = list(self.sizes), list(self.t0), list(self.t_profile)
        d["schedule"] = {str(k): v for k, v in self.schedule().items()}
        return d


# Training fields that must match for a checkpoint to be reused or resumed.
_TRAIN_KEYS = ("data", "n_train", "preset", "batch_size", "lr", "warmup", "ema_decay", "seed", "data_seed",
               "seq_len", "vocab_size", "weight_decay", "grad_clip", "t_min")


def _key(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_key(cfg) -> str:
    d = asdict(cfg)
    return _key({k: d[k] for k in _TRAIN_KEYS} | {"steps": d["steps"]})


def point_dir(out: Path, n: int) -> Path:
    return Path(out) / "points" / f"n{n:07d}"


# ----------------------------------------------------------------------------------- one point
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
    if any(saved.get(k) != want[k] for k in _TRAIN_KEYS):
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
    return (doc.get("train_key") == train_key(cfg) and doc.get("eval_key") == _key(settings.eval_settings())
            and checkpoint_state(pdir / "checkpoint", cfg) == "complete")


def run_point(settings: SweepSettings, out: Path, n: int, report=None, allow_truncated: bool = False) -> dict:
    """Train (or reuse / resume) one point, then recover and scan it; write point.json.

    report(phase, **info) is called at phase changes ('training', 'recovering', 'scanning', 'done').
    allow_truncated: when training is interrupted (Ctrl-C, or the sweep's deadline), evaluate the
    checkpoint as it is and mark the point truncated instead of giving up. A truncated point is a
    valid calibration point (recovery and scan measure the same model) but not a finished one: the
    next sweep resumes its training."""
    import signal

    import torch

    from .adapters import load
    from .data import corpus_from_spec
    from .probe import scan
    from .recovery import recover
    from .report import json_bytes, write_files, write_report
    from .train import train

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
        result = train(cfg, ckpt, resume=(state == "partial"), show_progress=False)
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
    training = saved["training"]

    report("recovering", steps_done=training.get("steps_done"))
    started = time.perf_counter()
    denoiser = load(ckpt, weights=settings.weights, device=settings.device)
    rec = recover(denoiser, "auto", "auto", t0=settings.t0, n=settings.recover_n,
                  steps_per_unit=settings.steps_per_unit, seed=settings.seed, show_progress=False)
    rec.write(pdir / "recovery")
    timings["recover_s"] = time.perf_counter() - started

    report("scanning")
    started = time.perf_counter()
    sc = scan(denoiser, samples=settings.scan_samples, steps=settings.scan_steps, seed=settings.seed,
              t_profile=tuple(settings.t_profile), show_progress=False)
    write_report(sc, pdir / "scan", names=["samples.parquet", "summary.json"])
    timings["scan_s"] = time.perf_counter() - started
    raw_scan = None
    if settings.scan_raw and (ckpt / "model.safetensors").exists() and denoiser.weights != "raw":
        raw = load(ckpt, weights="raw", device=settings.device)
        rs = scan(raw, samples=settings.scan_samples, steps=settings.scan_steps, seed=settings.seed,
                  show_progress=False)
        raw_scan = {"verdict": rs.verdict, "reason": rs.reason,
                    **{k: rs.stats[k] for k in ("mean_entropy", "mean_entropy_ci", "near_zero_sample_fraction",
                                                 "duplicate_rate", "fixed_point_fraction", "entropy_ratio")}}

    corpus = corpus_from_spec(saved["data"], tokenizer=denoiser.tokenizer)
    stored = {row.tobytes() for row in corpus.train_blocks(n).numpy().astype(np.int64)}
    train_copy = np.array([row.astype(np.int64).tobytes() in stored for row in sc.tokens], dtype=bool)
    sample_means = sc.entropy.astype(np.float64).mean(axis=2)                    # [T, N]
    doc = {
        "format": POINT_FORMAT,
        "n_train": int(n),
        "train_key": train_key(cfg),
        "eval_key": _key(settings.eval_settings()),
        "truncated": truncated,
        "settings": settings.to_dict(),
        "training": {k: training.get(k) for k in ("steps", "steps_done", "final_loss", "tokens_per_second",
                                                   "wall_seconds", "lr", "batch_size", "preset", "data")},
        "corpus": saved["data"],
        "vocab_size": int(denoiser.vocab_size),
        "seq_len": int(denoiser.seq_len),
        "weights": denoiser.weights,
        "recovery": {"verdict": rec.verdict, "reason": rec.reason, "explanation": rec.explanation,
                     "summaries": rec.summaries, "gaps": rec.gaps},
        "scan": {"verdict": sc.verdict, "reason": sc.reason, "rule": sc.rule.name,
                 "stats": dict(sc.stats), "steps": sc.settings.steps, "seed": sc.settings.seed,
                 "t_values": [float(t) for t in sc.t_values], "tau": sc.settings.tau,
                 "bootstrap_resamples": sc.settings.bootstrap_resamples, "confidence": sc.settings.confidence},
        "samples": {"mean_entropy": [[round(float(v), 7) for v in row] for row in sample_means],
                    "duplicate_of": [int(v) for v in sc.duplicate_of],
                    "is_fixed_point": [bool(v) for v in sc.is_fixed_point],
                    "fixed_point_distance": [round(float(v), 6) for v in sc.fixed_point_distance],
                    "is_train_copy": [bool(v) for v in train_copy]},
        "train_copy_rate": float(train_copy.mean()),
        "scan_raw": raw_scan,
        "trained_now": trained_now,
        "timings": timings,
        "device": settings.device,
        "torch_version": torch.__version__,
        "memaudit_version": __version__,
    }
    write_files(pdir, {"point.json": json_bytes(doc)})
    report("done", recovery=rec.verdict, scan=sc.verdict, truncated=truncated)
    return doc


def _worker(settings_dict: dict, out: str, n: int, queue, allow_truncated: bool) -> None:
    """Entry point of a worker process: one point, single-threaded torch."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MEMAUDIT_NO_PROGRESS", "1")
    settings = settings_from_dict(settings_dict)
    key = (settings.data, settings.preset, n)
    try:
        run_point(settings, Path(out), n, report=lambda phase, **info: queue.put(("phase", key, phase, info)),
                  allow_truncated=allow_truncated)
        queue.put(("done", key, None, {}))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        queue.put(("error", key, f"{type(e).__name__}: {e}", {"traceback": traceback.format_exc()}))


def settings_from_dict(d: dict) -> SweepSettings:
    known = set(SweepSettings.__dataclass_fields__)
    d = {k: v for k, v in d.items() if k in known}
    for k in ("sizes", "t0", "t_profile"):
        if k in d:
            d[k] = tuple(d[k])
    return SweepSettings(**d)


# ------------------------------------------------------------------------------------ the sweep
@dataclass
class SweepResult:
    out: Path
    settings: SweepSettings
    table: object                         # pandas DataFrame (tidy)
    points: dict[int, dict]               # n_train → point.json document
    reused: list[int] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)   # not run before the deadline
    files: dict[str, Path] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def summary(self) -> dict:
        pts = []
        for n in sorted(self.points):
            p = self.points[n]
            g = _gap_at(p, PRIMARY_T0)
            pts.append({"n_train": n, "steps": p["training"].get("steps_done"),
                        "final_loss": p["training"].get("final_loss"), "truncated": p.get("truncated", False),
                        "recovery_verdict": p["recovery"]["verdict"], "recovery_reason": p["recovery"]["reason"],
                        "train_recovery": g.get("train"), "test_recovery": g.get("test"), "t0": g.get("t0"),
                        "scan_verdict": p.get("scan_verdict_current"), "scan_reason": p.get("scan_reason_current"),
                        "mean_entropy": p["scan"]["stats"]["mean_entropy"],
                        "train_copy_rate": p["train_copy_rate"], "timings": p.get("timings", {})})
        return {"out": str(self.out), "settings": self.settings.to_dict(), "points": pts,
                "reused": self.reused, "ran": self.ran, "failed": {str(k): v for k, v in self.failed.items()},
                "skipped": self.skipped, "files": {k: str(v) for k, v in self.files.items()},
                "wall_seconds": self.wall_seconds, "memaudit_version": __version__}


def _gap_at(point: dict, t0: float) -> dict:
    gaps = point["recovery"]["gaps"]
    if not gaps:
        return {}
    return min(gaps, key=lambda g: abs(g["t0"] - t0))


def job_cost(settings: SweepSettings, n: int) -> float:
    """Relative training cost of a point, for longest-first scheduling."""
    from .model import PRESETS

    p = PRESETS[settings.preset]
    width = p["n_blocks"] * p["hidden_size"] / (3 * 128)
    return settings.schedule()[n] * max(1.0, width ** 0.5)


def sweep(settings: SweepSettings, out: str | Path, workers: int = 1, show_progress: bool | None = None,
          deadline_s: float | None = None, rule=None, plots: bool = True,
          clock: Callable[[], float] = time.perf_counter) -> SweepResult:
    """Run (or resume) a sweep and write its table, plots and index.html.

    workers: points trained in parallel processes (1: in this process). deadline_s: wall-clock
    budget; points not started by then are skipped, running ones stop training at it and are
    evaluated as they are (marked truncated; the next run resumes them). clock: what the deadline
    is measured with (seconds; the default is the wall clock) — tests pass a fake one so that
    where a deadline falls does not depend on the machine's speed."""
    settings.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline_origin = clock()
    prepare_corpus(settings)
    reused = [n for n in settings.sizes if point_finished(out, settings, n)]
    jobs = [(settings, out, n) for n in settings.sizes if n not in reused]
    view = SweepView([(settings, reused)], enabled=show_progress)
    with view:
        failed, skipped = run_jobs(jobs, workers, view, deadline_origin, deadline_s, clock=clock)
    failed_n = {k[2]: v for k, v in failed.items()}
    skipped_n = [k[2] for k in skipped]
    ran = [n for _, _, n in jobs if n not in failed_n and n not in skipped_n]
    points = load_points(out, settings, include_truncated=True)
    table = build_table(points, settings, rule=rule)
    files = write_outputs(out, settings, points, table, plots=plots)
    return SweepResult(out=out, settings=settings, table=table, points=points, reused=reused, ran=ran,
                       failed=failed_n, skipped=skipped_n, files=files, wall_seconds=time.perf_counter() - started)


def prepare_corpus(settings: SweepSettings) -> None:
    """Build the corpus once in this process, so parallel workers find the tokenizer and the token
    ids in the cache instead of each extracting and training them."""
    from .data import load_corpus

    load_corpus(settings.data, seq_len=settings.seq_len, seed=settings.data_seed, vocab_size=settings.vocab_size)


def schedule_order(jobs):
    """Longest first, alternating with the shortest: the long points start in the first wave (they
    set the makespan) while the cheap ones finish early, so a deadline never leaves a sweep
    without its small (memorizing) points."""
    by_cost = sorted(jobs, key=lambda j: (-job_cost(j[0], j[2]), j[0].data, j[0].preset, -j[2]))
    order = []
    lo, hi = 0, len(by_cost) - 1
    while lo <= hi:
        order.append(by_cost[lo])
        if lo != hi:
            order.append(by_cost[hi])
        lo, hi = lo + 1, hi - 1
    return order


def run_jobs(jobs, workers: int, view, started: float, deadline_s: float | None = None,
             grace_s: float = 60.0, clock: Callable[[], float] = time.perf_counter):
    """Run points [(settings, out, n)] in `schedule_order`; in this process when workers ≤ 1.

    The deadline (deadline_s after `started`) and the grace period after it are read from
    `clock` (default: the wall clock; `started` must come from the same clock).

    → (failed {key: message}, skipped [key]) with key = (data, preset, n)."""
    jobs = schedule_order(jobs)
    failed: dict[tuple, str] = {}
    skipped: list[tuple] = []
    allow_truncated = deadline_s is not None
    if workers <= 1:
        for settings, out, n in jobs:
            key = (settings.data, settings.preset, n)
            if deadline_s is not None and clock() - started > deadline_s:
                skipped.append(key)
                view.phase(key, "skipped")
                continue
            try:
                run_point(settings, out, n, report=lambda phase, _k=key, **info: view.phase(_k, phase, **info),
                          allow_truncated=False)
            except (SweepError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - keep the other points
                failed[key] = f"{type(e).__name__}: {e}"
                view.phase(key, "failed", error=failed[key])
        return failed, skipped
    return _run_parallel(jobs, workers, view, started, deadline_s, grace_s, allow_truncated, clock)


def _run_parallel(jobs, workers, view, started, deadline_s, grace_s, allow_truncated, clock=time.perf_counter):
    import multiprocessing as mp
    import queue as queue_mod
    import signal

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    pending = list(jobs)
    running: dict[tuple, object] = {}
    failed: dict[tuple, str] = {}
    skipped: list[tuple] = []
    finished: set[tuple] = set()
    interrupted = False
    try:
        while pending or running:
            elapsed = clock() - started
            late = deadline_s is not None and elapsed > deadline_s
            while pending and len(running) < workers and not late:
                settings, out, n = pending.pop(0)
                key = (settings.data, settings.preset, n)
                proc = ctx.Process(target=_worker, args=(settings.to_dict(), str(out), n, messages, allow_truncated),
                                   daemon=True)
                proc.start()
                running[key] = proc
                view.phase(key, "starting")
            if late and not interrupted:
                interrupted = True
                for settings, out, n in pending:
                    key = (settings.data, settings.preset, n)
                    skipped.append(key)
                    view.phase(key, "skipped (deadline)")
                pending = []
                for key, proc in running.items():
                    if proc.pid is not None and proc.is_alive():
                        os.kill(proc.pid, signal.SIGINT)   # train() stops, saves, the point is evaluated
                    view.phase(key, "deadline: stopping training")
            if interrupted and elapsed > deadline_s + grace_s:
                for key, proc in list(running.items()):
                    proc.terminate()
                    proc.join(timeout=10)
                    skipped.append(key)
                    view.phase(key, "killed after grace period")
                    running.pop(key)
                break
            try:
                _handle(messages.get(timeout=0.5), view, finished, failed)
            except queue_mod.Empty:
                pass
            if len(failed) >= min(FAIL_FAST, len(jobs)) and not finished:
                first = next(iter(failed.values()))
                raise SweepError(f"the first {len(failed)} points failed and none succeeded; stopping "
                                 f"(first error: {first})")
            for key, proc in list(running.items()):
                if key in finished or key in failed:
                    proc.join(timeout=30)
                    running.pop(key)
                elif not proc.is_alive():
                    proc.join()
                    _drain(messages, view, finished, failed)
                    if key not in finished and key not in failed:
                        failed[key] = f"worker exited with code {proc.exitcode}"
                        view.phase(key, "failed", error=failed[key])
                    running.pop(key)
    finally:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.join(timeout=10)
    return failed, skipped


def _drain(messages, view, finished, failed) -> None:
    import queue as queue_mod

    while True:
        try:
            _handle(messages.get(timeout=0.2), view, finished, failed)
        except queue_mod.Empty:
            return


def _handle(message, view, finished, failed) -> None:
    """One worker message: a phase change, a finished point or a failure."""
    kind, key, phase, info = message
    key = tuple(key)
    if kind == "phase":
        view.phase(key, phase, **info)
    elif kind == "done":
        finished.add(key)
    elif kind == "error":
        failed[key] = phase
        view.phase(key, "failed", error=phase)


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
            ckpt_steps = _steps_done(point_dir(out, n) / "checkpoint")
            if (doc.get("truncated") and doc.get("eval_key") == _key(settings.eval_settings())
                    and doc.get("train_key") == train_key(cfg) and ckpt_steps == doc["training"].get("steps_done")):
                points[n] = doc
    return points


def _steps_done(ckpt: Path):
    try:
        return json.loads((ckpt / "config.json").read_text())["training"]["steps_done"]
    except (OSError, KeyError, ValueError):
        return None


# ------------------------------------------------------------------------------ re-judging points
def point_record(point: dict) -> dict:
    """The per-sample arrays of a point.json document, in the calibration-table layout that
    memaudit.stats.record_statistics reads."""
    return {"t_values": point["scan"]["t_values"], "sample_mean_entropy": point["samples"]["mean_entropy"],
            "duplicate_of": point["samples"]["duplicate_of"], "is_fixed_point": point["samples"]["is_fixed_point"],
            "fixed_point_distance": point["samples"].get("fixed_point_distance"),
            "vocab_size": point["vocab_size"], "scan_seed": point["scan"].get("seed", point["settings"]["seed"])}


def current_scan_decision(point: dict, rule=None) -> tuple[str, str]:
    """The scan verdict of a point under `rule` (default: the scan's default rule), recomputed from
    the stored statistics (at another t_eval, τ or bootstrap: from its per-sample arrays), so a
    newly calibrated rule applies to finished sweeps."""
    from .stats import record_statistics
    from .verdict import Evidence, load_rule

    rule = load_rule(rule)
    stats = point["scan"]["stats"]
    if not math.isclose(stats["t_eval"], rule.t_eval) or not math.isclose(stats["tau"], rule.tau) \
            or point["scan"].get("bootstrap_resamples") != rule.bootstrap_resamples \
            or not math.isclose(point["scan"].get("confidence", rule.confidence), rule.confidence):
        stats = record_statistics(point_record(point), rule.t_eval, rule.tau, rule.bootstrap_resamples,
                                  rule.confidence)
        if stats is None:
            return "inconclusive", "rule_mismatch"
    d = rule.decide(Evidence.from_stats(stats, steps=point["scan"].get("steps")))
    return d.verdict, d.reason


def current_recovery_decision(point: dict) -> tuple[str, str]:
    """The verdict of the recovery rule (memaudit.verdict.RECOVERY_RULE) on a point's stored
    summaries and gaps (so a change of the rule needs no re-evaluation)."""
    from .verdict import RECOVERY_RULE

    summaries, gaps = point["recovery"]["summaries"], point["recovery"]["gaps"]
    # Points from before the summaries recorded it: the corrupted share × the sequence length.
    summaries = [{"mean_corrupted_tokens": s.get("mean_corrupted_fraction", math.inf) * point.get("seq_len", 1), **s}
                 for s in summaries]
    d = RECOVERY_RULE.decide(summaries, gaps)
    return d.verdict, d.reason


# ----------------------------------------------------------------------------------- the table


def build_table(points: dict[int, dict], settings: SweepSettings, rule=None):
    """Tidy table: one row per size × split × t0, with the point's scan and training columns."""
    import pandas as pd

    rows = []
    for n in sorted(points):
        p = points[n]
        verdict, reason = current_scan_decision(p, rule)
        p["scan_verdict_current"], p["scan_reason_current"] = verdict, reason
        p["recovery"]["verdict"], p["recovery"]["reason"] = current_recovery_decision(p)
        st = p["scan"]["stats"]
        gaps = {round(g["t0"], 9): g for g in p["recovery"]["gaps"]}
        base = {"data": settings.data, "preset": settings.preset, "n_train": n,
                "steps": p["training"].get("steps_done"), "final_loss": p["training"].get("final_loss"),
                "train_seconds": p["training"].get("wall_seconds"),
                "tokens_per_second": p["training"].get("tokens_per_second"),
                "vocab_size": p["vocab_size"], "seq_len": p["seq_len"], "weights": p["weights"],
                "recovery_verdict": p["recovery"]["verdict"], "recovery_reason": p["recovery"]["reason"],
                "scan_verdict": verdict, "scan_reason": reason,
                "scan_mean_entropy": st["mean_entropy"], "scan_mean_entropy_lo": st["mean_entropy_ci"][0],
                "scan_mean_entropy_hi": st["mean_entropy_ci"][1], "scan_entropy_ratio": st["entropy_ratio"],
                "scan_low_entropy_fraction": st["low_entropy_fraction"],
                "scan_near_zero_sample_fraction": st["near_zero_sample_fraction"],
                "scan_duplicate_rate": st["duplicate_rate"], "scan_fixed_point_fraction": st["fixed_point_fraction"],
                "scan_mean_fixed_point_distance": st.get("mean_fixed_point_distance", math.nan),
                "scan_t_eval": st["t_eval"], "scan_tau": st["tau"], "scan_samples": st["n_samples"],
                "scan_train_copy_rate": p["train_copy_rate"],
                "raw_scan_verdict": (p.get("scan_raw") or {}).get("verdict"),
                "raw_scan_mean_entropy": (p.get("scan_raw") or {}).get("mean_entropy")}
        for s in p["recovery"]["summaries"]:
            g = gaps.get(round(s["t0"], 9), {})
            rows.append({**base, "split": s["split"], "t0": s["t0"], "recovery_steps": s["steps"],
                         "recovery_rate": s["recovery_rate"], "recovery_rate_lo": s["recovery_rate_ci"][0],
                         "recovery_rate_hi": s["recovery_rate_ci"][1], "unstable_rate": s["unstable_rate"],
                         "exact_match": s["exact_match"], "n_examples": s["n"],
                         "entropy_recovered": s["entropy_recovered"], "entropy_stable": s["entropy_stable"],
                         "entropy_unstable": s["entropy_unstable"], "entropy_failed": s["entropy_failed"],
                         "gap": g.get("gap"), "gap_lo": (g.get("gap_ci") or [None])[0],
                         "gap_hi": (g.get("gap_ci") or [None, None])[1]})
    columns = ["data", "preset", "n_train", "steps", "split", "t0", "recovery_rate"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def table_bytes(table, metadata: dict) -> bytes:
    import pyarrow as pa

    from .report import METADATA_KEY, parquet_bytes

    t = pa.Table.from_pandas(table, preserve_index=False)
    t = t.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()})
    return parquet_bytes(t)


def write_outputs(out: Path, settings: SweepSettings, points: dict, table, plots: bool = True) -> dict[str, Path]:
    from .report import json_bytes, write_files

    meta = {"memaudit_version": __version__, "settings": settings.to_dict(), "units": "nats; rates are fractions",
            "n_points": len(points)}
    files = {"sweep.parquet": table_bytes(table, meta)}
    summary = {"settings": settings.to_dict(),
               "points": [{"n_train": n, "recovery": p["recovery"]["verdict"], "scan": p.get("scan_verdict_current"),
                           "train_copy_rate": p["train_copy_rate"], "timings": p.get("timings", {})}
                          for n, p in sorted(points.items())]}
    files["sweep.json"] = json_bytes(summary)
    if plots and len(table):
        figures = sweep_figures(table, title=f"{settings.data} · {settings.preset}")
        files.update(figures)
        files["index.html"] = index_html(f"memaudit sweep: {settings.data} · {settings.preset}", figures, table,
                                         settings.to_dict()).encode()
    return write_files(out, files)


# --------------------------------------------------------------------------------- progress view
class SweepView:
    """Which point is running: a live table on a TTY, one log line per phase change otherwise.

    sweeps: [(SweepSettings, reused sizes)]; points are keyed (data, preset, n_train)."""

    def __init__(self, sweeps, enabled: bool | None = None):
        from .progress import interactive

        self.enabled = interactive() if enabled is None else enabled
        self.steps, self.status, self.info = {}, {}, {}
        for settings, reused in sweeps:
            schedule = settings.schedule()
            for n in settings.sizes:
                key = (settings.data, settings.preset, n)
                self.steps[key] = schedule[n]
                self.status[key] = "reused" if n in reused else "queued"
                self.info[key] = {}
        self.started: dict[tuple, float] = {}
        self.t0 = time.perf_counter()
        self.live = None

    def __enter__(self):
        if self.enabled:
            from rich.live import Live

            from .progress import console

            self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def phase(self, key: tuple, phase: str, **info) -> None:
        from .progress import console

        if phase in ("starting", "training") and key not in self.started:
            self.started[key] = time.perf_counter()
        self.status[key] = phase
        self.info.setdefault(key, {}).update(info)
        if self.live is not None:
            self.live.update(self._render())
        else:
            elapsed = time.perf_counter() - self.t0
            extra = " ".join(f"{k}={v}" for k, v in info.items() if k != "traceback")
            data, preset, n = key
            console.print(f"[{elapsed:7.1f}s] {data}·{preset} n_train={n} ({self.steps.get(key)} steps): {phase} "
                          f"{extra}".rstrip(), highlight=False, soft_wrap=True)

    def _render(self):
        from rich.table import Table

        table = Table(title="memaudit sweep", expand=False)
        for col in ("data", "preset", "n_train", "steps", "status", "elapsed", "result"):
            table.add_column(col)
        now = time.perf_counter()
        for key, status in self.status.items():
            data, preset, n = key
            running = key in self.started and status not in ("done", "failed")
            el = f"{now - self.started[key]:.0f}s" if running else ""
            info = self.info.get(key, {})
            result = (f"recovery {info['recovery']} · scan {info['scan']}" if "recovery" in info
                      else info.get("error", ""))
            table.add_row(data, preset, str(n), str(self.steps[key]), status, el, result)
        return table


# ------------------------------------------------------------------------------------------ plots
VERDICT_COLORS = {"memorizing": "#c0392b", "generalizing": "#27ae60", "inconclusive": "#7f8c8d"}


def png_bytes(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def sweep_figures(table, title: str = "") -> dict[str, bytes]:
    """recovery.png (train/test recovery vs n_train per t0), entropy.png (scan statistics vs
    n_train), verdicts.png (scan verdict beside the recovery ground truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    t0s = sorted(table["t0"].unique())
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, t0 in enumerate(t0s):
        color = cmap(i / max(1, len(t0s) - 1) * 0.9)
        for split, style in (("train", "-"), ("test", "--")):
            d = table[(table["t0"] == t0) & (table["split"] == split)].sort_values("n_train")
            if d.empty:
                continue
            err = np.vstack([d["recovery_rate"] - d["recovery_rate_lo"], d["recovery_rate_hi"] - d["recovery_rate"]])
            ax.errorbar(d["n_train"], d["recovery_rate"], yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o" + style,
                        color=color, capsize=2, label=f"{split} t0={t0:g}")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training-set size n_train (sequences)")
    ax.set_ylabel("recovery rate (corrupted tokens restored)")
    ax.set_title(f"Token recovery: train (solid) vs held-out (dashed) {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    figures["recovery.png"] = png_bytes(fig)

    pts = table.drop_duplicates("n_train").sort_values("n_train")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    err = np.vstack([pts["scan_mean_entropy"] - pts["scan_mean_entropy_lo"],
                     pts["scan_mean_entropy_hi"] - pts["scan_mean_entropy"]])
    a1.errorbar(pts["n_train"], pts["scan_mean_entropy"], yerr=np.clip(err, 0, None), fmt="o-", capsize=3)
    a1.set_xscale("log")
    a1.set_xlabel("n_train")
    a1.set_ylabel("mean conditional entropy on samples (nats)")
    t_eval = float(pts["scan_t_eval"].iloc[0]) if "scan_t_eval" in pts and len(pts) else float("nan")
    a1.set_title(f"Scan: mean entropy at t_eval={t_eval:g} {title}")
    a1.grid(alpha=0.3)
    for col, label in (("scan_low_entropy_fraction", "tokens with H < τ"),
                       ("scan_near_zero_sample_fraction", "samples with mean H < τ"),
                       ("scan_duplicate_rate", "duplicate samples"),
                       ("scan_train_copy_rate", "samples = training sequence"),
                       ("scan_fixed_point_fraction", "greedy fixed points"),
                       ("scan_mean_fixed_point_distance", "tokens the greedy dynamics changes")):
        if col not in pts:
            continue
        a2.plot(pts["n_train"], pts[col], "o-", label=label)
    a2.set_xscale("log")
    a2.set_ylim(-0.03, 1.03)
    a2.set_xlabel("n_train")
    a2.set_ylabel("fraction")
    a2.set_title("Scan: low-entropy fraction and supporting signals")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7)
    figures["entropy.png"] = png_bytes(fig)

    fig, ax = plt.subplots(figsize=(8, 2.6))
    for row, (col, reason_col, label) in enumerate((("recovery_verdict", "recovery_reason", "recovery (ground truth)"),
                                                    ("scan_verdict", "scan_reason", "scan (data-free)"))):
        for _, p in pts.iterrows():
            ax.scatter(p["n_train"], row, s=160, color=VERDICT_COLORS.get(p[col], "k"), edgecolor="k", zorder=3)
            ax.annotate(str(p[reason_col]), (p["n_train"], row), textcoords="offset points", xytext=(0, 10),
                        ha="center", fontsize=6)
    ax.set_yticks([0, 1], ["recovery (ground truth)", "scan (data-free)"])
    ax.set_ylim(-0.6, 1.7)
    ax.set_xscale("log")
    ax.set_xlabel("n_train")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, markeredgecolor="k", label=v)
               for v, c in VERDICT_COLORS.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(f"Verdicts {title}")
    ax.grid(alpha=0.3, axis="x")
    figures["verdicts.png"] = png_bytes(fig)
    return figures


def points_frame(table):
    """One row per point (the per-point columns of the tidy table, recovery at PRIMARY_T0)."""
    import pandas as pd

    rows = []
    for (data, preset, n), d in table.groupby(["data", "preset", "n_train"], sort=True):
        first = d.iloc[0]
        at = d[np.isclose(d["t0"], d["t0"].iloc[(d["t0"] - PRIMARY_T0).abs().argmin()])]
        tr = at[at["split"] == "train"]["recovery_rate"]
        te = at[at["split"] == "test"]["recovery_rate"]
        rows.append({"data": data, "preset": preset, "n_train": n, "steps": first["steps"],
                     "final_loss": first["final_loss"], "t0": float(at["t0"].iloc[0]),
                     "train_recovery": float(tr.iloc[0]) if len(tr) else np.nan,
                     "test_recovery": float(te.iloc[0]) if len(te) else np.nan,
                     "recovery_verdict": first["recovery_verdict"], "recovery_reason": first["recovery_reason"],
                     "scan_verdict": first["scan_verdict"], "scan_reason": first["scan_reason"],
                     "mean_entropy": first["scan_mean_entropy"], "entropy_ratio": first["scan_entropy_ratio"],
                     "near_zero_samples": first["scan_near_zero_sample_fraction"],
                     "duplicates": first["scan_duplicate_rate"], "fixed_points": first["scan_fixed_point_fraction"],
                     "train_copies": first["scan_train_copy_rate"]})
    return pd.DataFrame(rows)


def index_html(title: str, figures: dict[str, bytes], table, settings: dict | None = None,
               extra_html: str = "") -> str:
    """A self-contained page: the figures base64-embedded, the per-point table, the settings."""
    import base64
    import html

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%;display:block;margin:1em 0}pre{background:#f6f6f6;padding:1em;font-size:11px}"
             "</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for name, png in figures.items():
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
    if table is not None and len(table):
        parts.append("<h2>Points</h2>")
        parts.append(points_frame(table).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0))
    parts.append(extra_html)
    if settings:
        parts.append("<h2>Settings</h2><pre>" + html.escape(json.dumps(settings, indent=2, sort_keys=True,
                                                                         default=str)) + "</pre>")
    parts.append(f"<p><small>memaudit {__version__}</small></p></body></html>")
    return "\n".join(parts)
