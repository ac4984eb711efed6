"""`memaudit verify REPORT_DIR`: check a scan report from its own files, without the model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EXIT_MEMORIZING, cli_errors, emit_error
from .options import JsonOutput, print_json, require_stdout


@cli_errors
def verify(
    report_dir: Annotated[Path, typer.Argument(help="A scan report folder (summary.json, samples.parquet, "
                                                    "tokens.parquet), or a multi-checkpoint scan's --out folder "
                                                    "(scans.parquet; every report in it), or a recovery report (recovery.parquet).",
                                               show_default=False)],
    rule: Annotated[Optional[Path], typer.Option("--rule", help="Also require the report's rule to be this "
                                                               "rule file (same sha256 and thresholds).",
                                                 show_default=False)] = None,
    json_output: JsonOutput = False,
):
    """Recompute a report's statistics and verdict from its own files and check their hashes.

    Exit 0 when the report is intact and its verdict reproduces under the rule it records; else
    exit 1 with one line naming the first mismatch. No model is loaded.
    """
    from ..progress import console
    from ..verify import verify_report

    if json_output:
        require_stdout()
    result = verify_report(report_dir, rule_file=rule)
    if json_output:
        print_json(result.to_dict())
    if not result.ok:
        emit_error(f"verify {report_dir}: {result.message}")
        raise typer.Exit(EXIT_MEMORIZING)
    if not json_output:
        from rich.markup import escape

        console.print(escape(f"{report_dir}: {result.message}"), highlight=False, soft_wrap=True)
