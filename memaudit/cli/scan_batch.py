"""`memaudit scan` with several checkpoints (or a glob, --from-list, --ray): the command's side of
memaudit.experiments.batch.scan_many: checks, the backend, the outputs, the exit code."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from .errors import UsageError, emit_error
from .options import check_output_targets, print_json, require_stdout, resolve_device, write_report_set


def scan_checkpoints(arguments: list[str], from_list: Optional[Path], ray: Optional[str], settings, *,
                     out: Optional[Path], json_output: bool, fail_on: str, exit_zero: bool, weights: Optional[str],
                     device: str, rule: Optional[Path], junit: Optional[Path], summary_md: Optional[Path],
                     resume: bool = False) -> None:
    """Scan every checkpoint and exit with the most severe code over them
    (memaudit.exit_codes.most_severe: 5 > 4 > 2 > 1 > 3 > 0)."""
    from ..experiments.backends import make_backend
    from ..experiments.batch import INDEX_NAME, TABLE_NAME, checkpoint_slugs, expand_checkpoints, scan_many
    from ..report import REPORT_FILES
    from ..verdict import load_rule

    if json_output:
        require_stdout()
    checkpoints = expand_checkpoints(arguments, from_list)
    if settings.n_train is not None and len(checkpoints) > 1:
        raise UsageError("--n-train is the training-set size of one model; it takes one checkpoint")
    targets = [p for p in (junit, summary_md) if p]
    if out is not None:
        slugs = checkpoint_slugs(checkpoints)
        targets += [out / TABLE_NAME, out / INDEX_NAME]
        targets += [out / slugs[c] / name for c in checkpoints for name in REPORT_FILES]
        check_checkpoints_outside(checkpoints, out)
    check_output_targets(targets)
    backend = make_backend(ray)
    result = scan_many(checkpoints, settings, out=out, weights=weights,
                       device=resolve_device(device, remote=ray is not None), rule=load_rule(rule), backend=backend,
                       resume=resume)
    entries = [s.document(fail_on, exit_zero) for s in result.scans]
    files = {}
    if junit is not None:
        from ..report import junit_xml_many

        files[junit] = junit_xml_many([{k: v for k, v in e.items() if k != "timings"} for e in entries],
                                      inconclusive="failure" if fail_on == "inconclusive" else "error")
    if summary_md is not None:
        from ..report import batch_markdown

        files[summary_md] = batch_markdown(entries).encode("utf-8")
    write_report_set(files)
    failed = [s for s in result.scans if s.summary is None]
    if len(failed) < len(result.scans):   # all failed: the one line below is the whole of stderr
        print_batch_summary(result, fail_on, exit_zero)
        if out is None:   # said after the work, so that a run refused up front stays one line
            console.print(f"memaudit: warning: no --out: the {len(result.scans)} reports, {TABLE_NAME} and "
                          f"{INDEX_NAME} were not saved (pass --out DIR to keep them)", highlight=False,
                          soft_wrap=True, markup=False)
    if json_output:
        print_json(result.summary(fail_on, exit_zero))
    if failed:
        listed = "; ".join(f"{s.checkpoint}: {s.error}" for s in failed[:3]) + ("; …" if len(failed) > 3 else "")
        emit_error(f"{len(failed)} of {len(result.scans)} checkpoints could not be scanned ({listed})")
    raise typer.Exit(result.exit_code(fail_on, exit_zero))


def check_checkpoints_outside(checkpoints: list[str], out: Path) -> None:
    """--out must not hold a checkpoint, nor lie inside one (`scan 'runs/*' --out runs` would write
    reports into the checkpoints and match its own outputs the next time): a usage error up front."""
    home = out.resolve()
    for c in checkpoints:
        path = Path(c)
        if not path.exists():
            continue
        resolved = path.resolve()
        if resolved == home or home in resolved.parents or resolved in home.parents:
            raise UsageError(f"--out {out} and the checkpoint {c} overlap; write the reports to a folder "
                             "outside the checkpoints (e.g. --out audit)")


def print_batch_summary(result, fail_on: str, exit_zero: bool) -> None:
    """One row per checkpoint, on stderr (timings here only: never in a file)."""
    from rich.markup import escape
    from rich.table import Table

    from ..report import fmt_ci

    table = Table(title=f"memaudit scan · {len(result.scans)} checkpoints", title_justify="left")
    for col in ("checkpoint", "step", "verdict", "reason / error", "mean H (nats)", "95% CI", "exit", "time"):
        table.add_column(col, justify="right" if col in ("step", "mean H (nats)", "exit", "time") else "left")
    colours = {"memorizing": "red", "generalizing": "green"}
    for s in result.scans:
        code = s.exit_code(fail_on, exit_zero)
        step = "" if s.step is None else str(s.step)
        if s.summary is None:
            table.add_row(escape(s.slug), step, "[bold red]failed[/]", escape(s.error or ""), "", "", str(code),
                          "")
            continue
        summary = s.summary
        time_text = "reused" if s.reused else f"{s.timings.get('total_s', 0):.1f} s"
        table.add_row(escape(s.slug), step, f"[{colours.get(s.verdict, 'yellow')}]{s.verdict}[/]",
                      escape(str(summary.get("reason", ""))), f"{summary['mean_entropy']:.4f}",
                      fmt_ci(summary.get("mean_entropy_ci"), "{:.4f}"), str(code), time_text)
    console.print(table)
    if result.out is not None:
        console.print(f"reports → {escape(str(result.out))} (scans.parquet, index.html, one directory per checkpoint)",
                      highlight=False, soft_wrap=True)
