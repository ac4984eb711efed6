"""`memaudit calibrate`: the scan's decision rule from reference sweeps, recovery as ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from .errors import UsageError, cli_errors
from .options import Deadline, Device, JsonOutput, RayAddress, RecoverN, Samples, ScanSteps, Seed, StepsPerUnit, \
    Workers, print_json, require_stdout, resolve_device


@cli_errors
def calibrate(
    out: Path = typer.Option(Path("memaudit/calibration"), "--out",
                             help="Where rule.json, the calibration table and the plots go."),
    from_table: Optional[Path] = typer.Option(None, "--from-table",
                                              help="Re-derive the rule from this calibration_table.parquet "
                                              "(no training)."),
    work: Optional[Path] = typer.Option(None, "--work", help="Sweep directories (checkpoints; default: the cache)."),
    sources: str = typer.Option("synthetic,stdlib", "--sources",
                                help="Data sources, comma-separated (≥ 1 synthetic, ≥ 1 text)."),
    presets: str = typer.Option("nano,micro", "--presets", help="Model presets, comma-separated."),
    skip: str = typer.Option("", "--skip", help="source:preset sweeps of the sources × presets plan to leave out, "
                             "comma-separated (e.g. stdlib:micro)."),
    synthetic_sizes: str = typer.Option("8,32,128,512,2048,8192,32768,131072", "--synthetic-sizes"),
    text_sizes: str = typer.Option("8,32,128,512,2048,max", "--text-sizes", help="'max' = the whole training pool."),
    steps_scale: float = typer.Option(1.0, "--steps-scale"),
    synthetic_cap: int = typer.Option(6000, "--synthetic-cap", min=1, help="Largest auto step count, synthetic sweeps."),
    text_cap: int = typer.Option(10000, "--text-cap", min=1, help="Largest auto step count, text sweeps."),
    recover_n: RecoverN = 256,
    steps_per_unit: StepsPerUnit = 100,
    samples: Samples = 256,
    scan_steps: ScanSteps = None,
    seed: Seed = 0,
    workers: Workers = 2,
    deadline: Deadline = None,
    device: Device = "auto",
    json_output: JsonOutput = False,
    ray: RayAddress = None,
):
    """Derive the scan's decision rule from reference sweeps, with token recovery as ground truth."""
    import shlex

    from rich.markup import escape

    from ..data import default_cache_dir
    from ..experiments import parse_int_list
    from ..experiments.backends import RayBackend
    from ..experiments.calibration import confusion_markdown, plan_from_options, regenerate, run_calibration

    if json_output:
        require_stdout()
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
        if ray is not None:
            argv += ["--ray", ray]
    command = " ".join(shlex.quote(a) for a in ["memaudit", "calibrate", *argv])
    log = lambda msg: console.print(msg, highlight=False, soft_wrap=True)  # noqa: E731
    if from_table is not None:
        result = regenerate(from_table, out, command=command, log=log)
    else:
        text = [s.strip() for s in text_sizes.split(",") if s.strip()]
        if not all(s == "max" or s.isdigit() for s in text):
            raise UsageError(f"--text-sizes must be comma-separated integers or 'max' (got {text_sizes!r})")
        plan = plan_from_options(
            [s for s in sources.split(",") if s], [p for p in presets.split(",") if p],
            parse_int_list(synthetic_sizes, "--synthetic-sizes"),
            tuple(s if s == "max" else int(s) for s in text), steps_scale=steps_scale,
            synthetic_cap=synthetic_cap, text_cap=text_cap, recover_n=recover_n, steps_per_unit=steps_per_unit,
            scan_samples=samples, scan_steps=scan_steps, seed=seed, device=resolve_device(device, remote=ray is not None),
            skip=tuple(k for k in skip.split(",") if k))
        result = run_calibration(plan, out, work or default_cache_dir() / "calibration", workers=workers,
                                 deadline_s=deadline, command=command, log=log,
                                 backend=None if ray is None else RayBackend(ray))
    report = result["report"]
    if json_output:
        print_json({"rule": result["rule"], "confusion": report["confusion"], "score": report["score"],
                    "files": {k: str(v) for k, v in result["files"].items()}})
    else:
        console.print(confusion_markdown(report["confusion"]), highlight=False)
        rule = result["rule"]
        console.print(f"rule → {escape(str(out / 'rule.json'))} (t_eval={rule['t_eval']:g}, tau={rule['tau']:g}, "
                      f"min_samples={rule['min_samples']})", highlight=False)
