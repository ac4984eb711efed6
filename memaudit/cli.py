"""The `memaudit` command line: a thin Typer layer over the Python API.

Exit codes (README "Exit codes"):
    0 generalizing / success · 1 memorizing (gate failed) · 2 usage error · 3 inconclusive ·
    4 checkpoint could not be resolved/loaded or unsupported family · 5 runtime failure
Logs, tables and progress go to stderr; --json prints exactly one JSON document on stdout.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .progress import console

EXIT_OK = 0
EXIT_MEMORIZING = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_LOAD = 4
EXIT_RUNTIME = 5

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tell whether a uniform-state diffusion language model memorizes or generalizes.")


def fail(message: str, code: int) -> None:
    console.print(f"[bold red]memaudit:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(func):
    """Map every failure to one line on stderr and its documented exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .adapters import LoadError
        from .data import DataError
        from .train import TrainError

        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except LoadError as e:
            fail(str(e), EXIT_LOAD)
        except (DataError, TrainError, UsageError) as e:
            fail(str(e), EXIT_USAGE)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("out of memory; lower --batch-size or --samples", EXIT_RUNTIME)
        except Exception as e:  # noqa: BLE001 - the contract is one line, whatever broke
            fail(f"runtime failure: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", EXIT_RUNTIME)

    return wrapper


class UsageError(Exception):
    """A bad option value detected after parsing (exit code 2)."""


def print_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return device


# --------------------------------------------------------------------------------------- train
@app.command()
@cli_errors
def train(
    data: str = typer.Option("synthetic", help="synthetic | docs | stdlib | PATH (.txt, .jsonl, .parquet)"),
    n_train: int = typer.Option(32, "--n-train", help="Training-set size in sequences (nested subsets)."),
    preset: str = typer.Option("nano", help="Model preset: nano, micro, tiny, small, medium."),
    steps: int = typer.Option(2000, help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(1e-3),
    warmup: int = typer.Option(100),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    seed: int = typer.Option(0, help="Seed for init, batches, times and noise."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of the corpus (Markov chain / block permutation)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Default: 32 synthetic, 64 text."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="BPE vocabulary for text (default 512)."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint in --out."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Train a reference uniform-state diffusion model (UDLM NELBO) on built-in or user data."""
    from .train import TrainConfig
    from .train import train as run_training

    cfg = TrainConfig(data=data, n_train=n_train, preset=preset, steps=steps, batch_size=batch_size, lr=lr,
                      warmup=warmup, ema_decay=ema_decay, seed=seed, data_seed=data_seed, seq_len=seq_len,
                      vocab_size=vocab_size, checkpoint_every=checkpoint_every, device=resolve_device(device))
    from .model import PRESETS

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    result = run_training(cfg, out, resume=resume)
    summary = {"out": str(result.out_dir), "steps_done": result.steps_done, "final_loss": result.final_loss,
               "tokens_per_second": result.tokens_per_second, "wall_seconds": result.wall_seconds,
               "interrupted": result.interrupted}
    if json_output:
        print_json(summary)
    console.print(f"{'interrupted' if result.interrupted else 'trained'}: {result.steps_done} steps, "
                  f"loss {result.final_loss:.4f} (NELBO, nats/token), {result.tokens_per_second:,.0f} tokens/s, "
                  f"{result.wall_seconds:.1f} s → {result.out_dir}", highlight=False)
    if result.interrupted:
        raise typer.Exit(130)


# -------------------------------------------------------------------------------------- sample
@app.command()
@cli_errors
def sample(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, file or hub id."),
    n: int = typer.Option(8, "--n", help="Number of sequences."),
    steps: int = typer.Option(128, help="Reverse steps from t=1."),
    seed: int = typer.Option(0),
    weights: Optional[str] = typer.Option(None, help="ema | raw (default: ema when present)."),
    device: str = typer.Option("auto"),
    json_output: bool = typer.Option(False, "--json"),
):
    """Generate sequences from noise with the model's own reverse process and print them."""
    from . import load
    from .sampling import generate

    if weights not in (None, "ema", "raw"):
        raise UsageError("--weights must be ema or raw")
    denoiser = load(checkpoint, weights=weights, device=resolve_device(device))
    tokens = generate(denoiser, n, steps=steps, seed=seed)
    rows = [{"tokens": row.tolist(), "text": denoiser.decode(row)} for row in tokens]
    if json_output:
        print_json({"samples": rows, "steps": steps, "seed": seed})
        return
    for i, row in enumerate(rows):
        shown = row["text"] if row["text"] is not None else " ".join(map(str, row["tokens"]))
        typer.echo(f"[{i}] {shown}")


# ----------------------------------------------------------------- commands from other modules
# (scan, demo, recover, sweep, inspect, calibrate register themselves below this line)


# ------------------------------------------------------------------------------------- inspect
@app.command("inspect")
@cli_errors
def inspect_command(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, file or hub id (org/name[@revision])."),
    weights: Optional[str] = typer.Option(None, help="ema | raw (default: the format's default, see docs/formats.md)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Accepted for compatibility; memaudit never runs checkpoint code."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Show a checkpoint's family, architecture, vocabulary, tokenizer, EMA and what a scan would use."""
    from rich.markup import escape

    from .inspect import format_summary, inspect_checkpoint

    if weights not in (None, "ema", "raw"):
        raise UsageError("--weights must be ema or raw")
    doc = inspect_checkpoint(checkpoint, weights=weights, trust_remote_code=trust_remote_code)
    if json_output:
        print_json(doc)
        return
    width = max(len(label) for label, _ in format_summary(doc))
    for label, value in format_summary(doc):
        console.print(f"[bold]{label:<{width}}[/]  {escape(value)}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------- recover
@app.command("recover")
@cli_errors
def recover_command(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, file or hub id."),
    train_data: str = typer.Option("auto", "--train", help="auto (native checkpoints: the model's own training "
                                   "subset) | .txt/.jsonl/.parquet (tokenized with the checkpoint's tokenizer) | .npy ids"),
    test_data: str = typer.Option("auto", "--test", help="auto (held-out blocks of the model's corpus) | file"),
    t0: str = typer.Option("0.05,0.1,0.25,0.5", "--t0", help="Corruption levels (≈ fraction of replaced tokens)."),
    n: int = typer.Option(256, "--n", help="Examples per split (at most)."),
    steps_per_unit: int = typer.Option(100, "--steps-per-unit",
                                       help="Reverse steps per unit of time: t0=0.25 runs 0.25·this (reference: 1000)."),
    seed: int = typer.Option(0, help="Seed of corruption, reverse process and bootstrap."),
    batch_size: int = typer.Option(256, "--batch-size"),
    weights: Optional[str] = typer.Option(None, help="ema | raw (default: ema when present)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write recovery.parquet + summary.json here."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 whatever the verdict (errors still fail)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Token recovery of training vs held-out examples: the ground truth of the regime.

    Exit codes: 0 generalizing · 1 memorizing · 3 inconclusive · 2 usage · 4 load · 5 runtime."""
    from .recovery import RecoveryError
    from .recovery import recover as run_recovery
    from .sweep import SweepError, parse_float_list

    if weights not in (None, "ema", "raw"):
        raise UsageError("--weights must be ema or raw")
    try:
        t0_values = parse_float_list(t0, "--t0")
        result = run_recovery(checkpoint, train=train_data, test=test_data, t0=t0_values, n=n,
                              steps_per_unit=steps_per_unit, seed=seed, batch_size=batch_size, weights=weights,
                              device=resolve_device(device))
    except (RecoveryError, SweepError) as e:
        raise UsageError(str(e)) from None
    if out is not None:
        result.write(out)
    if json_output:
        print_json(result.summary(include_timings=False))
    else:
        _print_recovery(result, out)
    if exit_zero:
        raise typer.Exit(EXIT_OK)
    raise typer.Exit({"generalizing": EXIT_OK, "memorizing": EXIT_MEMORIZING}.get(result.verdict, EXIT_INCONCLUSIVE))


def _print_recovery(result, out) -> None:
    from rich.table import Table

    table = Table(title="token recovery (95% CI)")
    for col in ("split", "t0", "steps", "n", "recovery", "unstable", "exact match", "H recovered", "H failed"):
        table.add_column(col)
    f = lambda v: "–" if v is None or v != v else f"{v:.3f}"  # noqa: E731
    for s in result.summaries:
        lo, hi = s["recovery_rate_ci"]
        table.add_row(s["split"], f"{s['t0']:g}", str(s["steps"]), str(s["n"]), f"{f(s['recovery_rate'])} [{f(lo)}, {f(hi)}]",
                      f(s["unstable_rate"]), f(s["exact_match"]), f(s["entropy_recovered"]), f(s["entropy_failed"]))
    console.print(table)
    for g in result.gaps:
        console.print(f"t0={g['t0']:g}: train − test = {g['gap']:+.3f} [{g['gap_ci'][0]:+.3f}, {g['gap_ci'][1]:+.3f}]",
                      highlight=False)
    console.print(f"[bold]{result.verdict}[/] ({result.reason}): {result.explanation}", highlight=False, soft_wrap=True)
    if out is not None:
        console.print(f"report → {out}", highlight=False)


# --------------------------------------------------------------------------------------- sweep
@app.command("sweep")
@cli_errors
def sweep_command(
    sizes: str = typer.Option("8,64,512,4096,65536", help="Training-set sizes (sequences), comma-separated."),
    data: str = typer.Option("synthetic", help="synthetic | docs | stdlib | PATH (.txt, .jsonl, .parquet)"),
    preset: str = typer.Option("nano", help="Model preset: nano, micro, tiny, small, medium."),
    steps: str = typer.Option("auto", help="auto (grows with n_train, see docs/transition.md) | N | 'SIZE:STEPS,…'"),
    steps_scale: float = typer.Option(1.0, "--steps-scale", help="Multiply every point's training steps."),
    steps_cap: int = typer.Option(3000, "--steps-cap", help="Largest number of steps of the auto schedule."),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(2e-3),
    warmup: int = typer.Option(100),
    ema_decay: float = typer.Option(0.99, "--ema-decay"),
    seed: int = typer.Option(0),
    data_seed: int = typer.Option(0, "--data-seed"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len"),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size"),
    t0: str = typer.Option("0.05,0.1,0.25,0.5", "--t0", help="Recovery corruption levels."),
    recover_n: int = typer.Option(256, "--recover-n", help="Recovery examples per split."),
    steps_per_unit: int = typer.Option(100, "--steps-per-unit"),
    samples: int = typer.Option(256, help="Scan samples per point."),
    scan_steps: Optional[int] = typer.Option(None, "--scan-steps", help="Scan sampler steps (default: the scan's)."),
    t_profile: str = typer.Option("0.01,0.05,0.1,0.25", "--t-profile", help="Extra scan evaluation times."),
    weights: Optional[str] = typer.Option(None, help="ema | raw for recover and scan (default: ema)."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory (resumable)."),
    workers: int = typer.Option(2, help="Points trained in parallel processes (single-threaded each on CPU)."),
    deadline: Optional[float] = typer.Option(None, help="Wall-clock budget in seconds; unfinished points are cut "
                                             "and evaluated as they are (marked truncated)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json"),
):
    """Train one model per training-set size, recover and scan each, plot the transition."""
    from .sweep import SweepError, SweepSettings, parse_float_list, parse_int_list
    from .sweep import sweep as run_sweep

    try:
        settings = SweepSettings(
            sizes=parse_int_list(sizes), data=data, preset=preset, steps=steps, steps_scale=steps_scale,
            steps_cap=steps_cap, batch_size=batch_size, lr=lr, warmup=warmup, ema_decay=ema_decay, seed=seed,
            data_seed=data_seed, seq_len=seq_len, vocab_size=vocab_size, t0=parse_float_list(t0, "--t0"),
            recover_n=recover_n, steps_per_unit=steps_per_unit, scan_samples=samples, scan_steps=scan_steps,
            t_profile=parse_float_list(t_profile, "--t-profile") if t_profile else (), weights=weights,
            device=resolve_device(device))
        if workers < 1:
            raise SweepError("--workers must be ≥ 1")
        result = run_sweep(settings, out, workers=workers, deadline_s=deadline)
    except SweepError as e:
        raise UsageError(str(e)) from None
    doc = result.summary()
    if json_output:
        from .recovery import finite_json

        print_json(finite_json(doc))
    else:
        for p in doc["points"]:
            tr, te = p["train_recovery"], p["test_recovery"]
            console.print(f"n_train={p['n_train']:>7}  steps={p['steps']:>6}  recovery train {tr:.2f} / test {te:.2f} "
                          f"(t0={p['t0']:g}) → {p['recovery_verdict']:<12} scan: {p['scan_verdict']} "
                          f"({p['scan_reason']})", highlight=False)
        console.print(f"sweep → {result.out} ({len(result.ran)} trained, {len(result.reused)} reused, "
                      f"{result.wall_seconds:.0f} s)", highlight=False)
    if result.failed:
        for n, msg in result.failed.items():
            console.print(f"[bold red]memaudit:[/] point n_train={n} failed: {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_RUNTIME)


# ----------------------------------------------------------------------------------- calibrate
@app.command("calibrate")
@cli_errors
def calibrate_command(
    out: Path = typer.Option(Path("memaudit/calibration"), "--out",
                             help="Where rule.json, the calibration table and the plots go."),
    from_table: Optional[Path] = typer.Option(None, "--from-table",
                                              help="Re-derive the rule from this calibration_table.parquet "
                                              "(no training)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Sweep directories (checkpoints; default: the cache)."),
    sources: str = typer.Option("synthetic,stdlib", help="Data sources, comma-separated (≥ 1 synthetic, ≥ 1 text)."),
    presets: str = typer.Option("nano,micro", help="Model presets, comma-separated."),
    skip: str = typer.Option("", help="source:preset sweeps of the sources × presets plan to leave out, "
                             "comma-separated (e.g. stdlib:micro)."),
    synthetic_sizes: str = typer.Option("8,32,128,512,2048,8192,32768,131072", "--synthetic-sizes"),
    text_sizes: str = typer.Option("8,32,128,512,2048,max", "--text-sizes", help="'max' = the whole training pool."),
    steps_scale: float = typer.Option(1.0, "--steps-scale"),
    synthetic_cap: int = typer.Option(6000, "--synthetic-cap", help="Largest auto step count, synthetic sweeps."),
    text_cap: int = typer.Option(10000, "--text-cap", help="Largest auto step count, text sweeps."),
    recover_n: int = typer.Option(256, "--recover-n"),
    steps_per_unit: int = typer.Option(100, "--steps-per-unit"),
    samples: int = typer.Option(256, help="Scan samples per point."),
    scan_steps: Optional[int] = typer.Option(None, "--scan-steps", help="Scan sampler steps (default: the scan's)."),
    seed: int = typer.Option(0),
    workers: int = typer.Option(2, help="Points trained in parallel processes."),
    deadline: Optional[float] = typer.Option(None, help="Wall-clock budget (s) of the training phase; points still "
                                             "training then are evaluated as they are."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json"),
):
    """Derive the scan's decision rule from reference sweeps, with token recovery as ground truth."""
    import shlex

    from .calibrate import CalibrationError, plan_from_options, regenerate, run_calibration
    from .data import default_cache_dir
    from .sweep import SweepError, parse_int_list
    from .verdict import RuleError

    if from_table is not None:
        argv = ["--from-table", str(from_table), "--out", str(out)]
    else:
        argv = ["--out", str(out), "--sources", sources, "--presets", presets, "--synthetic-sizes", synthetic_sizes,
                "--text-sizes", text_sizes, "--steps-scale", f"{steps_scale:g}", "--synthetic-cap", str(synthetic_cap),
                "--text-cap", str(text_cap), "--recover-n", str(recover_n), "--steps-per-unit", str(steps_per_unit),
                "--samples", str(samples), "--seed", str(seed), "--workers", str(workers), "--device", device]
        if skip:
            argv += ["--skip", skip]
        if scan_steps is not None:
            argv += ["--scan-steps", str(scan_steps)]
        if deadline is not None:
            argv += ["--deadline", f"{deadline:g}"]
    command = " ".join(shlex.quote(a) for a in ["memaudit", "calibrate", *argv])
    log = lambda msg: console.print(msg, highlight=False, soft_wrap=True)  # noqa: E731
    try:
        if from_table is not None:
            result = regenerate(from_table, out, command=command, log=log)
        else:
            text = [s for s in text_sizes.split(",") if s]
            plan = plan_from_options(
                [s for s in sources.split(",") if s], [p for p in presets.split(",") if p],
                parse_int_list(synthetic_sizes, "--synthetic-sizes"),
                tuple(s if s == "max" else int(s) for s in text), steps_scale=steps_scale,
                synthetic_cap=synthetic_cap, text_cap=text_cap, recover_n=recover_n, steps_per_unit=steps_per_unit,
                scan_samples=samples, scan_steps=scan_steps, seed=seed, device=resolve_device(device),
                skip=tuple(k for k in skip.split(",") if k))
            result = run_calibration(plan, out, work or default_cache_dir() / "calibration", workers=workers,
                                     deadline_s=deadline, command=command, log=log)
    except (CalibrationError, SweepError, RuleError, ValueError) as e:
        raise UsageError(str(e)) from None
    from .calibrate import confusion_markdown

    report = result["report"]
    if json_output:
        from .recovery import finite_json

        print_json(finite_json({"rule": result["rule"], "confusion": report["confusion"], "score": report["score"],
                                "files": {k: str(v) for k, v in result["files"].items()}}))
    else:
        console.print(confusion_markdown(report["confusion"]), highlight=False)
        console.print(f"rule → {out / 'rule.json'} (t_eval={result['rule']['t_eval']:g}, tau={result['rule']['tau']:g}, "
                      f"min_samples={result['rule']['min_samples']})", highlight=False)


# ---------------------------------------------------------------------------------------- scan
SCAN_HELP = """Probe a checkpoint without training data: sample from it, measure the conditional entropy of its predictions, give a verdict (memorizing / generalizing / inconclusive) and exit with a gate code.

\b
Gate (exit code of a completed scan):
  generalizing   0
  memorizing     1
  inconclusive   3; 1 with --fail-on inconclusive
  --exit-zero    0 for any verdict (overrides --fail-on)
Could not check, never 0: 2 usage, 4 load failure/unsupported, 5 runtime.

--json prints exactly one JSON document on stdout (the summary); the table, logs and progress go to stderr. --out DIR writes samples.parquet, tokens.parquet, summary.json and report.html, byte-identical for the same checkpoint, settings and seed."""


@app.command("scan", help=SCAN_HELP)
@cli_errors
def scan_command(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, file or hub id."),
    samples: int = typer.Option(256, "--samples", help="Number of generated samples (the rule needs a minimum)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Reverse steps of the sampler (default: 32 on the "
                                        "quadratic grid, chosen by measurement, docs/performance.md)."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Time grid of the sampler: linear | quadratic "
                                       "(default: quadratic)."),
    seed: int = typer.Option(0, "--seed", help="Seed of sampling, corruption and bootstrap."),
    t_eval: Optional[float] = typer.Option(None, "--t-eval", help="Time of the entropy evaluation (default: the "
                                           "rule's: 0.05 for the calibrated rule; another value gives 'inconclusive: rule_mismatch')."),
    t_profile: str = typer.Option("", "--t-profile", help="Extra evaluation times reported alongside, e.g. "
                                  "0.05,0.1 (tokens.parquet gains a t_eval column)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report files into this directory."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    fail_on: str = typer.Option("memorizing", "--fail-on", help="memorizing | inconclusive: the least severe "
                                "verdict that fails the gate with exit 1 (see exit codes above)."),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 for any completed scan (errors still fail)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="ema | raw (default: ema when present)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    batch_size: int = typer.Option(128, "--batch-size", help="Sequences per network call."),
    rule: Optional[Path] = typer.Option(None, "--rule", help="Decision rule file (default: the "
                                        "calibrated memaudit/calibration/rule.json; provisional.json "
                                        "where it is absent)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write a JUnit XML file (test case "
                                         "'memorization gate')."),
    summary_md: Optional[Path] = typer.Option(None, "--summary-md", help="Also write a Markdown summary "
                                              "(for $GITHUB_STEP_SUMMARY)."),
):
    from .probe import ScanError
    from .probe import scan as run_scan
    from .verdict import FAIL_ON, RuleError, gate_exit_code, load_rule

    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be memorizing or inconclusive (got {fail_on!r})")
    if weights not in (None, "ema", "raw"):
        raise UsageError("--weights must be ema or raw")
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    try:
        profile = tuple(float(v) for v in t_profile.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--t-profile must be comma-separated numbers (got {t_profile!r})") from None
    try:
        decision_rule = load_rule(rule)
        result = run_scan(checkpoint, samples=samples, steps=steps, grid=grid, seed=seed, t_eval=t_eval,
                          batch_size=batch_size,
                          weights=weights, device=resolve_device(device), rule=decision_rule, t_profile=profile)
    except (ScanError, RuleError) as e:
        raise UsageError(str(e)) from None
    written = result.write(out) if out is not None else {}
    summary = result.summary(include_timings=True)
    if junit is not None:
        from .ci_outputs import write_junit

        write_junit(summary, junit, inconclusive="failure" if fail_on == "inconclusive" else "error")
    if summary_md is not None:
        from .ci_outputs import write_summary_md

        write_summary_md(summary, summary_md, artifacts=sorted(written) or None)
    print_scan_summary(result, out)
    if json_output:
        print_json(summary)
    raise typer.Exit(gate_exit_code(result.verdict, fail_on=fail_on, exit_zero=exit_zero))


def print_scan_summary(result, out: Optional[Path] = None) -> None:
    """The Rich summary of a scan, on stderr."""
    from rich.markup import escape
    from rich.table import Table

    from .report import fmt_ci

    colour = {"memorizing": "red", "generalizing": "green"}.get(result.verdict, "yellow")
    s = result.settings
    from .probe import checkpoint_label

    table = Table(title=f"memaudit scan · {escape(str(checkpoint_label(result.model) or ''))}",
                  title_justify="left")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_column(f"{s.confidence:.0%} CI", justify="right")
    table.add_row("mean conditional entropy (nats)", f"{result.mean_entropy:.4f}", fmt_ci(result.mean_entropy_ci))
    table.add_row("… relative to ln V", f"{result.entropy_ratio:.1%}", fmt_ci(result.entropy_ratio_ci, "{:.1%}"))
    table.add_row(f"tokens with H < τ={s.tau:g}", f"{result.low_entropy_fraction:.1%}",
                  fmt_ci(result.low_entropy_fraction_ci, "{:.1%}"))
    table.add_row("samples with mean H < τ", f"{result.near_zero_sample_fraction:.1%}",
                  fmt_ci(result.near_zero_sample_fraction_ci, "{:.1%}"))
    table.add_row("duplicate samples", f"{result.duplicate_rate:.1%}", "")
    table.add_row(f"fixed points (greedy, t={s.fixed_point_t:g}, {s.fixed_point_steps} steps)",
                  f"{result.fixed_point_fraction:.1%}", "")
    table.add_row("… tokens the greedy dynamics changes (mean)", f"{result.mean_fixed_point_distance:.1%}", "")
    for p in result.stats.get("profile", [])[1:]:
        table.add_row(f"mean entropy at t={p['t']:g}", f"{p['mean_entropy']:.4f}", "")
    console.print(table)
    rule = result.rule
    console.print(f"[bold {colour}]{result.verdict}[/] ({result.reason}): {escape(result.explanation)}",
                  highlight=False, soft_wrap=True)
    console.print(f"rule: {rule.name} v{rule.version} ({rule.status}) · {escape(rule.source[:160])}"
                  f"{'…' if len(rule.source) > 160 else ''}", highlight=False, soft_wrap=True)
    t = result.timings
    console.print(f"{result.n_samples} samples × {result.tokens.shape[1]} tokens, {s.steps} sampler steps, seed "
                  f"{s.seed}, {s.device}: {t.get('total_s', 0):.1f} s (sampling {t.get('sampling_s', 0):.1f} s)"
                  + (f" · report → {escape(str(out))}" if out is not None else ""), highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------- demo
@app.command("demo")
@cli_errors
def demo_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Write both scan reports here (DIR/memorizing, "
                                       "DIR/generalizing)."),
    samples: int = typer.Option(256, "--samples", help="Samples per scan."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: the scan's)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Train (or reuse from the cache) a memorizing and a generalizing nano model and scan both.

    Exit 0 when both verdicts match the known regimes, 5 otherwise."""
    from .demo import contrast_table, run_demo
    from .probe import ScanError

    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    try:
        demo = run_demo(samples=samples, steps=steps, seed=seed, out=out, device=resolve_device(device))
    except ScanError as e:
        raise UsageError(str(e)) from None
    console.print(contrast_table(demo))
    if json_output:
        print_json(demo.summary())
    if not demo.ok:
        fail("the reference models did not get their known verdicts: "
             + ", ".join(f"{n}: {r.verdict} ({r.reason})" for n, r in demo.results.items()), EXIT_RUNTIME)
    rule = next(iter(demo.results.values())).rule
    which = f"the {rule.status} rule" if rule.name == rule.status else f"rule {rule.name} ({rule.status})"
    console.print(f"both reference models got their known verdicts under {which}; see docs/calibration.md",
                  highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
