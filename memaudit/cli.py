"""The `memaudit` command line: a thin Typer layer over the Python API.

Exit codes (README "Exit codes"):
    0 generalizing / success · 1 memorizing (gate failed) · 2 usage error · 3 inconclusive ·
    4 checkpoint could not be resolved/loaded or unsupported family · 5 runtime failure ·
    130 interrupted
Logs, tables and progress go to stderr; --json prints exactly one JSON document on stdout (nothing
on failure). Every failure is one line on stderr, `memaudit: …`, usage errors included.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from .progress import console

EXIT_OK = 0
EXIT_MEMORIZING = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_LOAD = 4
EXIT_RUNTIME = 5
EXIT_INTERRUPTED = 130

# Seeds feed torch generators through derived streams (seed·100003 + batch); 32 bits keep every
# derived seed inside the generator's 64-bit range.
SEED_MAX = 2**32 - 1


def one_line(text: object) -> str:
    """Checkpoint- or user-derived text made safe for the one-line contract: no line breaks."""
    return " ".join(str(text).replace("\r", "\n").split("\n")).strip()


def emit_error(message: str) -> None:
    """The single stderr line of a failure. The message is printed literally: paths, tensor names
    and exception texts may contain Rich markup such as `[/]` or `[red]`."""
    from rich.markup import escape

    console.print(f"[bold red]memaudit:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> None:
    emit_error(message)
    raise typer.Exit(code)


class UsageError(Exception):
    """A bad option value detected after parsing (exit code 2)."""


class OutputError(Exception):
    """stdout or a report location could not be written (exit code 5)."""


def _exit_code_for(e: BaseException) -> tuple[str, int]:
    """The one table from exceptions to (message, exit code)."""
    from .adapters import LoadError
    from .data import DataError
    from .denoiser import NonFiniteOutput
    from .train import TrainError

    if isinstance(e, LoadError):
        return str(e), EXIT_LOAD
    if isinstance(e, (DataError, TrainError, UsageError)):
        return str(e), EXIT_USAGE
    if isinstance(e, NonFiniteOutput):
        return f"runtime failure: {e}", EXIT_RUNTIME
    if isinstance(e, OutputError):
        return str(e), EXIT_RUNTIME
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(e, MemoryError):
        return "out of memory; lower --batch-size or --samples", EXIT_RUNTIME
    text = str(e).splitlines()[0] if str(e) else ""
    return f"runtime failure: {type(e).__name__}: {text}", EXIT_RUNTIME


def cli_errors(func):
    """Map every failure to one line on stderr and its documented exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except BaseException as e:  # noqa: BLE001 - the contract is one line, whatever broke
            if isinstance(e, SystemExit):
                raise
            message, code = _exit_code_for(e)
            fail(message, code)

    return wrapper


class MemauditGroup(TyperGroup):
    """Typer's group with the parser's own errors (unknown option, missing argument, a value out
    of range …) as one line and exit 2. Typer vendors click in recent releases and uses click in
    older ones, so its exceptions are recognised by what they carry, not by their class."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name="memaudit", complete_var=complete_var,
                                standalone_mode=False, **extra)
            code = code if isinstance(code, int) else EXIT_OK
        except KeyboardInterrupt:
            emit_error("interrupted")
            code = EXIT_INTERRUPTED
        except Exception as e:  # noqa: BLE001 - click/typer exceptions, by duck type
            if type(e).__name__ == "Abort":
                emit_error("interrupted")
                code = EXIT_INTERRUPTED
            elif not hasattr(e, "format_message"):
                message, code = _exit_code_for(e)
                emit_error(message)
            elif getattr(e, "exit_code", 1) == EXIT_USAGE:
                ctx = getattr(e, "ctx", None)
                command = ctx.command_path if ctx is not None else "memaudit"
                message = "missing command" if type(e).__name__ == "NoArgsIsHelpError" else e.format_message()
                message = message[:1].lower() + message[1:]
                emit_error(f"usage: {message.rstrip('.')} (see {command} --help)")
                code = EXIT_USAGE
            else:
                emit_error(e.format_message())
                code = getattr(e, "exit_code", EXIT_RUNTIME) or EXIT_RUNTIME
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=MemauditGroup,
                  help="Tell whether a uniform-state diffusion language model memorizes or generalizes.")


def print_json(document: dict) -> None:
    """The one JSON document on stdout: strict JSON (NaN/inf become null), sorted keys."""
    from .io import json_text

    write_out(json_text(document, ensure_ascii=True) + "\n")


def require_stdout() -> None:
    """Fail before any work when the command's output has nowhere to go (stdout closed)."""
    if sys.stdout is None or getattr(sys.stdout, "closed", False):
        raise OutputError("cannot write to stdout (it is closed); nothing was run")


def write_out(text: str) -> None:
    from .io import write_stdout

    try:
        write_stdout(text)
    except (OSError, ValueError) as e:   # closed (None or ValueError on a closed file) or broken pipe
        _silence_stdout()
        raise OutputError(f"cannot write to stdout ({e}); no output was lost silently") from None


def _silence_stdout() -> None:
    """After a failed write, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    sys.stdout = open(os.devnull, "w")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return device


def check_output_targets(paths) -> None:
    """Before any work: every report path must be a regular file or absent, in a directory memaudit
    may create or write; else a usage error naming the path. Leftovers of killed runs are cleaned."""
    import os

    from .io import recover_file_sets

    for path in paths:
        path = Path(path)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise UsageError(f"cannot write {path}: it exists and is not a regular file")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UsageError(f"cannot write {path}: {ancestor} is not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write {path}: permission denied in {ancestor}")
        if path.parent.is_dir():
            recover_file_sets(path.parent)


def write_report_set(files: dict) -> None:
    """All report files of one command as one set (memaudit.io.write_file_set)."""
    from .io import write_file_set

    if not files:
        return
    try:
        write_file_set(files)
    except OSError as e:
        raise OutputError(f"could not write the report ({e.strerror or e}: {e.filename or ''}); "
                          f"the previous report files are unchanged") from None


# --------------------------------------------------------------------------------------- train
@app.command()
@cli_errors
def train(
    data: str = typer.Option("synthetic", help="synthetic | docs | stdlib | PATH (.txt, .jsonl, .parquet)"),
    n_train: int = typer.Option(32, "--n-train", min=1, help="Training-set size in sequences (nested subsets)."),
    preset: str = typer.Option("nano", help="Model preset: nano, micro, tiny, small, medium."),
    steps: int = typer.Option(2000, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    lr: float = typer.Option(1e-3),
    warmup: int = typer.Option(100),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed for init, batches, times and noise (0 … 2^32−1)."),
    data_seed: int = typer.Option(0, "--data-seed", min=0, max=SEED_MAX, help="Seed of the corpus (Markov chain / block permutation)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Default: 32 synthetic, 64 text."),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="BPE vocabulary for text (default 512)."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint in --out."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Train a reference uniform-state diffusion model (UDLM NELBO) on built-in or user data."""
    from rich.markup import escape

    if json_output:
        require_stdout()
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
                  f"{result.wall_seconds:.1f} s → {escape(str(result.out_dir))}", highlight=False)
    if result.interrupted:
        raise typer.Exit(130)


# -------------------------------------------------------------------------------------- sample
@app.command()
@cli_errors
def sample(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory, file or hub id."),
    n: int = typer.Option(8, "--n", min=1, help="Number of sequences."),
    steps: int = typer.Option(128, min=1, help="Reverse steps from t=1."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed (0 … 2^32−1)."),
    weights: Optional[str] = typer.Option(None, help="ema | raw (default: ema when present)."),
    device: str = typer.Option("auto"),
    json_output: bool = typer.Option(False, "--json"),
):
    """Generate sequences from noise with the model's own reverse process and print them."""
    require_stdout()
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
        write_out(f"[{i}] {shown}\n")


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
    if json_output:
        require_stdout()
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
    n: int = typer.Option(256, "--n", min=1, help="Examples per split (at most)."),
    steps_per_unit: int = typer.Option(100, "--steps-per-unit",
                                       help="Reverse steps per unit of time: t0=0.25 runs 0.25·this (reference: 1000)."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of corruption, reverse process and bootstrap."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    weights: Optional[str] = typer.Option(None, help="ema | raw (default: ema when present)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write recovery.parquet + summary.json here."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 whatever the verdict (errors still fail)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Token recovery of training vs held-out examples: the ground truth of the regime.

    Exit codes: 0 generalizing · 1 memorizing · 3 inconclusive · 2 usage · 4 load · 5 runtime."""
    if json_output:
        require_stdout()
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
    from rich.markup import escape
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
    console.print(f"[bold]{result.verdict}[/] ({result.reason}): {escape(result.explanation)}", highlight=False,
                  soft_wrap=True)
    if out is not None:
        console.print(f"report → {escape(str(out))}", highlight=False)


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
    seed: int = typer.Option(0, min=0, max=SEED_MAX),
    data_seed: int = typer.Option(0, "--data-seed", min=0, max=SEED_MAX),
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
    from rich.markup import escape

    if json_output:
        require_stdout()
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
        console.print(f"sweep → {escape(str(result.out))} ({len(result.ran)} trained, {len(result.reused)} reused, "
                      f"{result.wall_seconds:.0f} s)", highlight=False)
    if result.failed:
        for n, msg in result.failed.items():
            emit_error(f"point n_train={n} failed: {msg}")
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
    seed: int = typer.Option(0, min=0, max=SEED_MAX),
    workers: int = typer.Option(2, help="Points trained in parallel processes."),
    deadline: Optional[float] = typer.Option(None, help="Wall-clock budget (s) of the training phase; points still "
                                             "training then are evaluated as they are."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json"),
):
    """Derive the scan's decision rule from reference sweeps, with token recovery as ground truth."""
    from rich.markup import escape

    if json_output:
        require_stdout()
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
        console.print(f"rule → {escape(str(out / 'rule.json'))} (t_eval={result['rule']['t_eval']:g}, tau={result['rule']['tau']:g}, "
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
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of sampling, corruption and bootstrap (0 … 2^32−1)."),
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
    if json_output:
        require_stdout()
    from .probe import ScanError
    from .probe import scan as run_scan
    from .verdict import FAIL_ON, RuleError, gate_exit_code, load_rule

    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on must be memorizing or inconclusive (got {fail_on!r})")
    if weights not in (None, "ema", "raw"):
        raise UsageError("--weights must be ema or raw")
    from .report import REPORT_FILES, render_report

    targets = ([out / name for name in REPORT_FILES] if out is not None else []) + [p for p in (junit, summary_md) if p]
    check_output_targets(targets)
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
    summary = result.summary(include_timings=True)
    files = {out / name: data for name, data in render_report(result).items()} if out is not None else {}
    if junit is not None:
        from .ci_outputs import junit_xml

        files[junit] = junit_xml(summary, inconclusive="failure" if fail_on == "inconclusive" else "error")
    if summary_md is not None:
        from .ci_outputs import summary_markdown

        artifacts = sorted(REPORT_FILES) if out is not None else None
        files[summary_md] = summary_markdown(summary, artifacts).encode("utf-8")
    write_report_set(files)
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
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
):
    """Train (or reuse from the cache) a memorizing and a generalizing nano model and scan both.

    Exit 0 when both verdicts match the known regimes, 5 otherwise."""
    if json_output:
        require_stdout()
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


def preload() -> None:
    """Import what every command needs, up front (the entry point holds Ctrl-C meanwhile)."""
    import torch  # noqa: F401

    from . import adapters, probe, recovery, report, train, verdict  # noqa: F401


# The console script and `python -m memaudit` start in memaudit.entrypoint, which holds Ctrl-C
# while this module and torch load, then runs `app`.
