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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
