"""Benchmark of `memaudit scan` against a reference sampler written the way the paper's code does it.

    python benchmarks/bench_scan.py                 # nano (both reference models) and tiny, 256 samples
    python benchmarks/bench_scan.py --quick         # nano generalizing model only, 64 samples
    python benchmarks/bench_scan.py --preset tiny --tiny-checkpoint DIR
    python benchmarks/bench_scan.py --steps-sweep   # the evidence behind the default number of steps

For each model it prints the wall-clock time of a full `memaudit.scan` (sampling, entropy, fixed
points, bootstrap, verdict) and of the reference (1000 ancestral steps from t=1, exact posterior in
float64, one network call per step, batch 256, greedy final step, then the entropy pass), their
ratio, both mean entropies with 95% bootstrap intervals, and both verdicts under the same rule. It
also prints the forward pass's model FLOP/s against plain matrix products of the same shapes.

The reference's time can be extrapolated from its first K steps (--reference-timed-steps K: its
cost per step is constant); its statistics then come from its full run only when --reference-full
is given (the tiny preset's 1000 steps take about an hour on 2 CPU cores). Every extrapolation is
printed as such. Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

REFERENCE_STEPS = 1000
REFERENCE_BATCH = 256
REFERENCE_T = 1e-5             # the paper-style probe evaluates the entropy at t ≈ 0


# ------------------------------------------------------------------------- the reference sampler
@torch.no_grad()
def reference_generate(denoiser, n: int, seed: int = 0, steps: int = REFERENCE_STEPS,
                       batch_size: int = REFERENCE_BATCH, max_steps: int | None = None):
    """Uniform noise at t=1, `steps` ancestral steps on linspace(1, 1e-5), exact uniform-noise posterior
    in float64 (Bayes with x̂ in place of the one-hot x0), categorical draws by the exponential race,
    greedy (argmax x̂) final step. Written independently of memaudit.sampling, on purpose.

    max_steps: stop each batch after that many steps (timing only; the result is then not a sample).
    → (tokens [n, L] int64, seconds, steps actually run per batch)"""
    V, L = denoiser.vocab_size, denoiser.seq_len
    eps = denoiser.schedule.eps
    device = denoiser.device
    grid = torch.linspace(1.0, 1e-5, steps + 1, dtype=torch.float64)
    out = []
    run = steps if max_steps is None else min(steps, max_steps)
    started = time.perf_counter()
    for b in range(math.ceil(n / batch_size)):
        size = min(batch_size, n - b * batch_size)
        gen = torch.Generator(device=device).manual_seed(1_000_003 * seed + 17 + b)
        x = torch.randint(0, V, (size, L), generator=gen, device=device)
        for i in range(run):
            t, s = float(grid[i]), float(grid[i + 1])
            a_t, a_s = 1 - (1 - eps) * t, 1 - (1 - eps) * s
            a_ts = a_t / a_s
            p = denoiser(x, torch.full((size,), t)).double().exp()                    # x̂, float64
            onehot = torch.nn.functional.one_hot(x, V).double()
            num = V * a_t * p * onehot + (a_ts - a_t) * onehot + (a_s - a_t) * p + (1 - a_ts) * (1 - a_s) / V
            den = V * a_t * (p * onehot).sum(-1, keepdim=True) + (1 - a_t)
            post = num / den
            x = (post / torch.empty_like(post).exponential_(generator=gen)).argmax(-1)
        x = denoiser(x, torch.full((size,), 1e-5)).argmax(-1)
        out.append(x.cpu())
    return torch.cat(out), time.perf_counter() - started, run


@torch.no_grad()
def reference_entropy(denoiser, tokens, seed: int = 0, t: float = REFERENCE_T, batch_size: int = REFERENCE_BATCH):
    """H_i in nats of x̂ at t on one uniform-noise corruption of each sample (float32). → ([N, L], s)"""
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed + 99)
    alpha = 1 - (1 - denoiser.schedule.eps) * t
    keep = torch.rand(tokens.shape, generator=gen) < alpha
    x_t = torch.where(keep, tokens, torch.randint(0, denoiser.vocab_size, tokens.shape, generator=gen))
    hs = []
    for i in range(0, len(x_t), batch_size):
        logp = denoiser(x_t[i:i + batch_size], torch.full((min(batch_size, len(x_t) - i),), t)).float()
        hs.append(-(logp.exp() * logp).nan_to_num().sum(-1).cpu())
    return torch.cat(hs), time.perf_counter() - started


def reference_scan(denoiser, n: int, seed: int, rule, timed_steps: int | None, full: bool):
    """Time (measured or extrapolated) and statistics of the reference pipeline."""
    from memaudit.probe import ScanSettings, basin_agreement, find_duplicates, fixed_point_distance, summarize
    from memaudit.verdict import Evidence

    row = {}
    if timed_steps is not None and timed_steps < REFERENCE_STEPS:
        _, secs, ran = reference_generate(denoiser, n, seed, max_steps=timed_steps)
        per_step = secs / ran
        row["reference_time_s"] = per_step * (REFERENCE_STEPS + 1)
        row["reference_time_note"] = f"extrapolated from {ran} of {REFERENCE_STEPS} steps"
    if full or "reference_time_s" not in row:
        tokens, secs, _ = reference_generate(denoiser, n, seed)
        h, h_secs = reference_entropy(denoiser, tokens, seed)
        if "reference_time_s" not in row:
            row["reference_time_s"] = secs + h_secs
            row["reference_time_note"] = "measured"
        # untimed, for the comparison at the rule's t_eval and the verdict only
        h_rule, _ = reference_entropy(denoiser, tokens, seed, t=rule.t_eval)
        fp = fixed_point_distance(denoiser, tokens)
        basin = basin_agreement(denoiser, tokens, seed=seed)
        _, dup_of = find_duplicates(tokens.numpy())
        settings = ScanSettings(samples=n, steps=REFERENCE_STEPS, seed=seed, t_eval=rule.t_eval, tau=rule.tau,
                                bootstrap_resamples=rule.bootstrap_resamples, confidence=rule.confidence)
        entropy = h_rule.numpy()[None]
        stats = summarize(entropy, np.exp(-entropy), dup_of, fp.numpy(), basin.numpy(), denoiser.vocab_size,
                          settings, [rule.t_eval], tokens=tokens.numpy())
        decision = rule.decide(Evidence.from_stats(stats, steps=REFERENCE_STEPS))
        # the paper's probe itself: entropy at t = 1e-5, with its bootstrap CI
        at_zero = summarize(h.numpy()[None], np.exp(-h.numpy()[None]), dup_of, fp.numpy(), basin.numpy(),
                            denoiser.vocab_size, settings, [rule.t_eval])
        row.update(reference_mean=stats["mean_entropy"], reference_ci=stats["mean_entropy_ci"],
                   reference_mean_t0=at_zero["mean_entropy"], reference_ci_t0=at_zero["mean_entropy_ci"],
                   reference_verdict=f"{decision.verdict} ({decision.reason})")
    return row


# ------------------------------------------------------------------------------------ FLOPs
def forward_flops(cfg, batch: int) -> float:
    """Multiply-adds × 2 of one forward pass (matrix products and attention; elementwise work ignored)."""
    d, L, V, H = cfg.hidden_size, cfg.seq_len, cfg.vocab_size, cfg.n_heads
    tokens = batch * L
    per_block = 2 * tokens * (3 * d * d + d * d + 2 * cfg.mlp_ratio * d * d) + 2 * 2 * batch * L * L * d
    adaln = 2 * batch * cfg.cond_dim * 6 * d
    return cfg.n_blocks * (per_block + adaln) + 2 * tokens * d * V + 2 * batch * cfg.cond_dim * 2 * d


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn, repeat: int) -> float:
    fn()
    _sync()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - started)
    return best


@torch.no_grad()
def flops_report(denoiser, batch: int, repeat: int = 5) -> dict:
    cfg = denoiser.model.config
    dev = denoiser.device
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device=dev)
    t = torch.full((batch,), 0.5, device=dev)
    fwd = _time(lambda: denoiser(x, t), repeat)
    flops = forward_flops(cfg, batch)
    d, n_tok = cfg.hidden_size, batch * cfg.seq_len
    a = torch.randn(n_tok, d, device=dev)
    w = {k: torch.randn(*shape, device=dev) for k, shape in {"qkv": (d, 3 * d), "out": (d, d), "up": (d, cfg.mlp_ratio * d),
                                                  "vocab": (d, cfg.vocab_size)}.items()}
    h = torch.randn(n_tok, cfg.mlp_ratio * d, device=dev)
    down = torch.randn(cfg.mlp_ratio * d, d, device=dev)

    def matmuls():
        for _ in range(cfg.n_blocks):
            a @ w["qkv"], a @ w["out"], a @ w["up"], h @ down
        a @ w["vocab"]

    mm = _time(matmuls, repeat)
    mm_flops = cfg.n_blocks * 2 * n_tok * (3 * d * d + d * d + 2 * cfg.mlp_ratio * d * d) + 2 * n_tok * d * cfg.vocab_size
    big = torch.randn(2048, 2048, device=dev)
    peak = _time(lambda: big @ big, repeat)
    return {"batch": batch, "forward_s": fwd, "model_gflops": flops / fwd / 1e9, "matmul_gflops": mm_flops / mm / 1e9,
            "square_2048_gflops": 2 * 2048 ** 3 / peak / 1e9}


# ------------------------------------------------------------------------------------ models
def nano_checkpoints() -> dict[str, Path]:
    from memaudit.reference import ensure_reference_models

    paths = ensure_reference_models(["memorizing", "generalizing"])
    return {"nano, memorizing reference model": paths["memorizing"],
            "nano, generalizing reference model": paths["generalizing"]}


def tiny_denoiser(checkpoint: str | None):
    """The tiny preset: a given checkpoint, a cached tiny reference run, or random weights (said so)."""
    from memaudit import load
    from memaudit.data import load_corpus
    from memaudit.denoiser import Denoiser
    from memaudit.diffusion import LogLinearSchedule
    from memaudit.model import DDiT, preset_config
    from memaudit.reference import ensure_reference_model, is_cached

    if checkpoint:
        return load(checkpoint), f"tiny preset, checkpoint {checkpoint}"
    overrides = {"preset": "tiny", "lr": 1e-3}
    if is_cached("generalizing", None, **overrides):
        path = ensure_reference_model("generalizing", **overrides)
        return load(path), f"tiny preset, cached generalizing run {path}"
    corpus = load_corpus("synthetic")
    torch.manual_seed(0)
    model = DDiT(preset_config("tiny", vocab_size=corpus.vocab_size, seq_len=corpus.seq_len))
    with torch.no_grad():  # the zero-initialised output layer would give exactly uniform predictions
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.02)
    d = Denoiser(model=model, schedule=LogLinearSchedule(), vocab_size=corpus.vocab_size, seq_len=corpus.seq_len,
                 provenance={"checkpoint": "random weights"})
    return d, "tiny preset, RANDOM WEIGHTS (no trained checkpoint given or cached)"


# --------------------------------------------------------------------------------------- main
def fmt_ci(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def bench_model(label: str, denoiser, args, rule) -> dict:
    from memaudit.probe import scan

    print(f"\n== {label}  (V={denoiser.vocab_size}, L={denoiser.seq_len}, "
          f"{denoiser.model.num_parameters():,} parameters)", flush=True)
    started = time.perf_counter()
    result = scan(denoiser, samples=args.samples, steps=args.steps, grid=args.grid, seed=args.seed, rule=rule,
                  show_progress=False, adaptive=not args.no_adaptive, t_profile=(REFERENCE_T,))
    scan_s = time.perf_counter() - started
    print(f"memaudit scan: {scan_s:.1f} s (sampling {result.timings['sampling_s']:.1f}, entropy "
          f"{result.timings['entropy_s']:.1f}, fixed points {result.timings['fixed_point_s']:.1f}, basins "
          f"{result.timings['basin_s']:.1f}; {result.settings.steps} steps, batch {result.timings['batch_size']}, "
          f"{result.n_samples} samples: {result.stopping['reason']}) → {result.verdict} "
          f"({result.reason}), mean H {result.mean_entropy:.4f} {fmt_ci(result.mean_entropy_ci)}", flush=True)
    ref = reference_scan(denoiser, args.samples, args.seed, rule, args.reference_timed_steps, args.reference_full)
    row = {"model": label, "scan_s": scan_s, "scan_mean": result.mean_entropy, "scan_ci": result.mean_entropy_ci,
           "scan_verdict": f"{result.verdict} ({result.reason})", **ref}
    row["speedup"] = row["reference_time_s"] / scan_s
    print(f"reference:     {row['reference_time_s']:.1f} s ({row['reference_time_note']})", end="")
    if "reference_mean" in row:
        # compare like with like: the scan's mean at the rule's t_eval with the reference's at t_eval,
        # and the scan's profile entry at t = 1e-5 with the paper-style probe's own statistic
        scan_t0 = next(p["mean_entropy"] for p in result.stats["profile"] if math.isclose(p["t"], REFERENCE_T))
        inside = row["reference_ci"][0] <= row["scan_mean"] <= row["reference_ci"][1]
        inside_t0 = row["reference_ci_t0"][0] <= scan_t0 <= row["reference_ci_t0"][1]
        row.update(scan_mean_t0=scan_t0, inside_reference_ci=inside, inside_reference_ci_t0=inside_t0)
        row["same_verdict"] = row["reference_verdict"].split()[0] == result.verdict
        print(f" → {row['reference_verdict']}, mean H at t={rule.t_eval:g} {row['reference_mean']:.4f} "
              f"{fmt_ci(row['reference_ci'])}, at t={REFERENCE_T:g} {row['reference_mean_t0']:.4f} "
              f"{fmt_ci(row['reference_ci_t0'])}")
        print(f"speed-up {row['speedup']:.1f}×; same verdict: {row['same_verdict']}; scan mean inside the "
              f"reference's CI at t={rule.t_eval:g}: {inside} ({row['scan_mean']:.4f}), at t={REFERENCE_T:g}: "
              f"{inside_t0} ({scan_t0:.4f})", flush=True)
    else:
        print(f"\nspeed-up {row['speedup']:.1f}× (reference statistics not computed: pass --reference-full)",
              flush=True)
    fl = flops_report(denoiser, batch=min(128, result.timings["batch_size"]))
    row["flops"] = fl
    print(f"forward pass (batch {fl['batch']}): {fl['forward_s'] * 1000:.1f} ms, {fl['model_gflops']:.1f} model "
          f"GFLOP/s vs {fl['matmul_gflops']:.1f} GFLOP/s for plain matmuls of the same shapes "
          f"({fl['model_gflops'] / fl['matmul_gflops']:.0%}); 2048² matmul {fl['square_2048_gflops']:.1f} GFLOP/s",
          flush=True)
    return row


def steps_sweep(args, rule) -> None:
    from memaudit import load
    from memaudit.probe import scan

    steps_list = [16, 32, 64, 128, 256, 1000] if not args.quick else [16, 32, 64, 1000]
    for label, path in nano_checkpoints().items():
        d = load(path)
        print(f"\n== steps sweep: {label}, {args.samples} samples, seed {args.seed}")
        rows = []
        for s in steps_list:
            started = time.perf_counter()
            r = scan(d, samples=args.samples, steps=s, grid=args.grid, seed=args.seed, rule=rule, show_progress=False)
            rows.append((s, r, time.perf_counter() - started))
        ref = rows[-1][1].mean_entropy_ci
        print("| steps | mean entropy (nats, 95% CI) | inside the 1000-step interval | verdict | time (s) |")
        print("| ---: | --- | --- | --- | ---: |")
        for s, r, secs in rows:
            inside = ref[0] <= r.mean_entropy <= ref[1]
            print(f"| {s} | {r.mean_entropy:.4f} {fmt_ci(r.mean_entropy_ci)} | {'yes' if inside else 'no'} | "
                  f"{r.verdict} ({r.reason}) | {secs:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="nano generalizing model only, 64 samples")
    ap.add_argument("--preset", choices=("all", "nano", "tiny"), default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nano-model", choices=("both", "memorizing", "generalizing"), default="both")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--tiny-checkpoint", default=None, help="a trained tiny-preset checkpoint")
    ap.add_argument("--reference-timed-steps", type=int, default=None,
                    help="time only this many reference steps and extrapolate to 1000")
    ap.add_argument("--reference-full", action="store_true",
                    help="with --reference-timed-steps: still run the full reference for its statistics")
    ap.add_argument("--steps", type=int, default=None, help="scan sampler steps (default: the scan's)")
    ap.add_argument("--grid", choices=("linear", "quadratic"), default=None,
                    help="scan sampler time grid (default: the scan's)")
    ap.add_argument("--steps-sweep", action="store_true", help="scan at 16…1000 sampler steps instead")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-adaptive", action="store_true", help="time the fixed-sample scan (all --samples)")
    args = ap.parse_args()
    args.samples = args.samples or (64 if args.quick else 256)
    args.preset = args.preset or ("nano" if args.quick else "all")
    os.environ.setdefault("MEMAUDIT_NO_PROGRESS", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from memaudit import __version__, load
    from memaudit.verdict import load_rule

    rule = load_rule()
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    print(f"memaudit {__version__}, torch {torch.__version__}, {cpu}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, device {args.device}, load average {load1:.2f}")
    print(f"rule {rule.name} ({rule.status}); {args.samples} samples, seed {args.seed}")
    if args.steps_sweep:
        steps_sweep(args, rule)
        return
    rows = []
    if args.preset in ("all", "nano"):
        for label, path in nano_checkpoints().items():
            if (args.quick and "generalizing" not in label) or (args.nano_model != "both"
                                                                  and args.nano_model not in label):
                continue
            rows.append(bench_model(label, load(path, device=args.device), args, rule))
    if args.preset in ("all", "tiny"):
        d, label = tiny_denoiser(args.tiny_checkpoint)
        rows.append(bench_model(label, d.to(args.device), args, rule))
    print(f"\n| model | memaudit scan (s) | reference (s) | speed-up | mean H at t={rule.t_eval:g}: memaudit (95% CI) "
          f"| reference (95% CI) | inside | mean H at t={REFERENCE_T:g}: memaudit | reference (95% CI) | inside "
          "| same verdict |")
    print("| --- | ---: | ---: | ---: | --- | --- | --- | ---: | --- | --- | --- |")
    for r in rows:
        has = "reference_mean" in r
        ref_h = f"{r['reference_mean']:.4f} {fmt_ci(r['reference_ci'])}" if has else "–"
        ref_0 = f"{r['reference_mean_t0']:.4f} {fmt_ci(r['reference_ci_t0'])}" if has else "–"
        note = "" if r["reference_time_note"] == "measured" else " (extrapolated)"
        print(f"| {r['model']} | {r['scan_s']:.1f} | {r['reference_time_s']:.1f}{note} | {r['speedup']:.1f}× | "
              f"{r['scan_mean']:.4f} {fmt_ci(r['scan_ci'])} | {ref_h} | {r.get('inside_reference_ci', '–')} | "
              f"{r['scan_mean_t0']:.4f} | {ref_0} | {r.get('inside_reference_ci_t0', '–')} | "
              f"{r.get('same_verdict', '–')} |" if has else
              f"| {r['model']} | {r['scan_s']:.1f} | {r['reference_time_s']:.1f}{note} | {r['speedup']:.1f}× | "
              f"{r['scan_mean']:.4f} {fmt_ci(r['scan_ci'])} | – | – | – | – | – | – |")
    print("\n| model | forward batch | model GFLOP/s | same-shape matmul GFLOP/s | ratio | 2048² matmul GFLOP/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        f = r["flops"]
        print(f"| {r['model']} | {f['batch']} | {f['model_gflops']:.1f} | {f['matmul_gflops']:.1f} | "
              f"{f['model_gflops'] / f['matmul_gflops']:.0%} | {f['square_2048_gflops']:.1f} |")
    load2 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average at the end {load2:.2f} (other processes share these cores; timings are wall clock)")


if __name__ == "__main__":
    main()
