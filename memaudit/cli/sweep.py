"""`memaudit sweep`: the memorization→generalization transition, one model per training-set size."""
from __future__ import annotations

from pathlib import Path

import typer

from ..experiments import SweepSettings
from ..progress import console
from .errors import EXIT_RUNTIME, cli_errors, emit_error
from .options import SAMPLES_MAX, Data, DataSeed, Deadline, Device, JsonOutput, Preset, RayAddress, RecoverN, Samples, ScanSteps, \
    Seed, SeqLen, StepsPerUnit, VocabSize, Weights, Workers, print_json, require_stdout, resolve_device

S = SweepSettings   # the CLI's defaults are the settings' defaults


def _csv(values) -> str:
    return ",".join(f"{v:g}" for v in values)


@cli_errors
def sweep(
    sizes: str = typer.Option(",".join(map(str, S.sizes)), "--sizes",
                              help="Training-set sizes (sequences), comma-separated."),
    data: Data = S.data,
    preset: Preset = S.preset,
    steps: str = typer.Option(S.steps, "--steps", help="auto (grows with n_train, see docs/transition.md) | N | "
                              "'SIZE:STEPS,…'"),
    steps_scale: float = typer.Option(S.steps_scale, "--steps-scale", help="Multiply every point's training steps."),
    steps_cap: int = typer.Option(S.steps_cap, "--steps-cap", min=1,
                                  help="Largest number of steps of the auto schedule."),
    batch_size: int = typer.Option(S.batch_size, "--batch-size", min=1, max=SAMPLES_MAX),
    lr: float = typer.Option(S.lr, "--lr"),
    warmup: int = typer.Option(S.warmup, "--warmup", min=0),
    ema_decay: float = typer.Option(S.ema_decay, "--ema-decay"),
    seed: Seed = S.seed,
    data_seed: DataSeed = S.data_seed,
    seq_len: SeqLen = S.seq_len,
    vocab_size: VocabSize = S.vocab_size,
    t0: str = typer.Option(_csv(S.t0), "--t0", help="Recovery corruption levels."),
    recover_n: RecoverN = S.recover_n,
    steps_per_unit: StepsPerUnit = S.steps_per_unit,
    samples: Samples = S.scan_samples,
    scan_steps: ScanSteps = S.scan_steps,
    t_profile: str = typer.Option(_csv(S.t_profile), "--t-profile", help="Extra scan evaluation times."),
    weights: Weights = S.weights,
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory (resumable)."),
    workers: Workers = 2,
    deadline: Deadline = None,
    device: Device = "auto",
    json_output: JsonOutput = False,
    ray: RayAddress = None,
):
    """Train one model per training-set size, recover and scan each, plot the transition.

    With --ray each point is one Ray task; --out must then lie on storage every node reaches (the
    points' checkpoints are written there); this process writes every report and table."""
    from rich.markup import escape

    from ..experiments import SweepSettings, parse_float_list, parse_int_list
    from ..experiments import sweep as run_sweep
    from ..experiments.backends import make_backend

    if json_output:
        require_stdout()
    settings = SweepSettings(
        sizes=parse_int_list(sizes), data=data, preset=preset, steps=steps, steps_scale=steps_scale,
        steps_cap=steps_cap, batch_size=batch_size, lr=lr, warmup=warmup, ema_decay=ema_decay, seed=seed,
        data_seed=data_seed, seq_len=seq_len, vocab_size=vocab_size, t0=parse_float_list(t0, "--t0"),
        recover_n=recover_n, steps_per_unit=steps_per_unit, scan_samples=samples, scan_steps=scan_steps,
        t_profile=parse_float_list(t_profile, "--t-profile") if t_profile else (), weights=weights,
        device=resolve_device(device, remote=ray is not None))
    backend = make_backend(ray) if ray is not None else None   # else the local pool (--workers)
    result = run_sweep(settings, out, workers=workers, deadline_s=deadline, backend=backend)
    doc = result.summary()
    if json_output:
        print_json(doc)
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
