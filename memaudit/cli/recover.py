"""`memaudit recover`: token recovery of training vs held-out examples, the ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from .errors import EXIT_INCONCLUSIVE, EXIT_MEMORIZING, EXIT_OK, cli_errors
from .options import Checkpoint, Device, ExitZero, JsonOutput, Seed, StepsPerUnit, Weights, check_out_dir, \
    print_json, require_stdout, resolve_device


@cli_errors
def recover(
    checkpoint: Checkpoint,
    train_data: str = typer.Option("auto", "--train", help="auto (native checkpoints: the model's own training "
                                   "subset) | .txt/.jsonl/.parquet (tokenized with the checkpoint's tokenizer) | .npy ids"),
    test_data: str = typer.Option("auto", "--test", help="auto (held-out blocks of the model's corpus) | file"),
    t0: str = typer.Option("0.05,0.1,0.25,0.5", "--t0", help="Corruption levels (≈ fraction of replaced tokens)."),
    n: int = typer.Option(256, "--n", min=1, help="Examples per split (at most)."),
    steps_per_unit: StepsPerUnit = 100,
    seed: Seed = 0,
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    weights: Weights = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Write recovery.parquet + summary.json here."),
    device: Device = "auto",
    exit_zero: ExitZero = False,
    json_output: JsonOutput = False,
):
    """Token recovery of training vs held-out examples: the ground truth of the regime.

    Exit codes: 0 generalizing · 1 memorizing · 3 inconclusive · 2 usage · 4 load · 5 runtime."""
    from ..recovery import recover as run_recovery
    from ..sweep import parse_float_list

    if json_output:
        require_stdout()
    check_out_dir(out)
    result = run_recovery(checkpoint, train=train_data, test=test_data, t0=parse_float_list(t0, "--t0"), n=n,
                          steps_per_unit=steps_per_unit, seed=seed, batch_size=batch_size, weights=weights,
                          device=resolve_device(device))
    if out is not None:
        result.write(out)
    if json_output:
        print_json(result.summary(include_timings=False))
    else:
        print_recovery(result, out)
    if exit_zero:
        raise typer.Exit(EXIT_OK)
    raise typer.Exit({"generalizing": EXIT_OK, "memorizing": EXIT_MEMORIZING}.get(result.verdict, EXIT_INCONCLUSIVE))




def print_recovery(result, out) -> None:
    """Train one model per training-set size, recover and scan each, plot the transition."""
    from rich.markup import escape

    if json_output:
        require_stdout()
    from ..sweep import SweepError, SweepSettings, parse_float_list, parse_int_list
    from ..sweep import sweep as run_sweep

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
        from ..recovery import finite_json

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
