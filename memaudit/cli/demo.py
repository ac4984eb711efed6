"""`memaudit demo`: the main job on the built-in defaults."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from .errors import EXIT_RUNTIME, cli_errors, fail
from .options import STEPS_MAX, Device, JsonOutput, Samples, Seed, check_out_dir, print_json, require_stdout, resolve_device


@cli_errors
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Write both scan reports here (DIR/memorizing, "
                                       "DIR/generalizing)."),
    samples: Samples = 256,
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=STEPS_MAX, help="Sampler steps (default: the scan's)."),
    seed: Seed = 0,
    device: Device = "auto",
    json_output: JsonOutput = False,
):
    """Train (or reuse from the cache) a memorizing and a generalizing nano model and scan both.

    Exit 0 when both verdicts match the known regimes, 5 otherwise."""
    from ..demo import contrast_table, run_demo

    if json_output:
        require_stdout()
    check_out_dir(out)
    demo = run_demo(samples=samples, steps=steps, seed=seed, out=out, device=resolve_device(device))
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
