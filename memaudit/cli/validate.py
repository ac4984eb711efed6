"""`memaudit validate`: the scan rule judged on models it was never fitted on (recovery as ground truth)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..progress import console
from .errors import cli_errors
from .options import Device, JsonOutput, print_json, require_stdout, resolve_device


@cli_errors
def validate(
    sweeps: Optional[List[Path]] = typer.Argument(None, help="Finished `memaudit sweep` directories (their "
                                                  "checkpoints are scanned again with today's scan)."),
    out: Path = typer.Option(Path("memaudit/calibration/validation"), "--out",
                             help="Where validation_table.parquet, validation.json and validation.md go."),
    from_table: Optional[Path] = typer.Option(None, "--from-table",
                                              help="Re-judge this validation_table.parquet (no model needed)."),
    rule: Optional[Path] = typer.Option(None, "--rule", help="Decision rule file (default: the scan's)."),
    device: Device = "cpu",
    json_output: JsonOutput = False,
):
    """Judge the scan rule on validation models: confusion table and per-point verdicts."""
    import shlex

    from ..experiments.validation import ValidationError, run_validation

    if json_output:
        require_stdout()
    if (from_table is None) == (not sweeps):
        raise ValidationError("give either sweep directories or --from-table (one of the two)")
    argv = ["--from-table", str(from_table)] if from_table is not None else [str(s) for s in sweeps]
    argv += ["--out", str(out)] + (["--rule", str(rule)] if rule is not None else [])
    command = " ".join(shlex.quote(a) for a in ["memaudit", "validate", *argv])
    log = lambda msg: console.print(msg, highlight=False, soft_wrap=True)  # noqa: E731
    result = run_validation(out, sweep_dirs=sweeps or (), from_table=from_table, rule=rule,
                            device=resolve_device(device), command=command, log=log)
    if json_output:
        print_json({k: v for k, v in result.items() if k != "decisions"} | {"out": str(out)})
        return
    log(f"{result['points']} points, {len(result['languages'])} languages: wrong definite verdicts (gate) "
        f"{result['wrong_gate']}, clear points decided {result['clear_decided']}/{result['clear_points']} "
        f"→ {out / 'validation.md'}")
