"""`memaudit recover`: token recovery of training vs held-out examples, the ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from ..recovery import RecoverySettings
from ..exit_codes import GATE_CODES
from .errors import EXIT_INCONCLUSIVE, EXIT_OK, cli_errors
from .options import Threads
from .options import SAMPLES_MAX, TRAIN_SOURCES, BatchSize, Checkpoint, Device, ExitZero, JsonOutput, Precision, ScheduleSpec, Seed, \
    StepsPerUnit, TimeInput, TokenizerName, TrustRemoteCode, Weights, check_out_dir, load_options, print_json, \
    require_stdout, resolve_device, write_report_set


R = RecoverySettings   # the CLI's defaults are the settings' defaults


@cli_errors
def recover(
    checkpoint: Checkpoint,
    train_data: str = typer.Option("auto", "--train", help=TRAIN_SOURCES),
    test_data: str = typer.Option("auto", "--test", help="auto (held-out blocks of the model's corpus) | file"),
    t0: str = typer.Option(",".join(f"{t:g}" for t in R.t0), "--t0",
                           help="Corruption levels (≈ fraction of replaced tokens)."),
    n: int = typer.Option(R.n, "--n", min=1, max=SAMPLES_MAX, help="Examples per split (at most)."),
    steps_per_unit: StepsPerUnit = R.steps_per_unit,
    seed: Seed = R.seed,
    batch_size: BatchSize = "auto",
    precision: Precision = "auto",
    weights: Weights = None,
    tokenizer: TokenizerName = None,
    trust_remote_code: TrustRemoteCode = False,
    time_input: TimeInput = None,
    schedule: ScheduleSpec = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Write recovery.parquet + summary.json here."),
    device: Device = "auto",
    threads: Threads = None,
    exit_zero: ExitZero = False,
    json_output: JsonOutput = False,
    pattern: str = typer.Option("uniform", "--pattern", help="Conditioning patterns, comma-separated: uniform "
                                "(corruption at each t0: the verdict's protocol, always run) | prefix:F | suffix:F "
                                "(keep the first / last fraction F clean, regenerate the rest from noise, kept "
                                "positions clamped) | span:F (regenerate one random contiguous span of fraction F) | infill:F (keep "
                                "both ends, regenerate the middle fraction F). "
                                "Exact completion of train vs test per pattern, beside the verdict (never changes "
                                "it or the exit code)."),
    prompt: str = typer.Option(None, "--prompt", help="Prompt of a prompt-conditioned family (DiffusionGemma; "
                               "'ids:2,17' for token ids). Default: the chat template's empty user turn, else BOS."),
):
    """Token recovery of training vs held-out examples: the ground truth of the regime.

    Exit codes: 0 generalizing · 1 memorizing · 3 inconclusive · 2 usage · 4 load · 5 runtime."""
    from .. import threads as torch_threads

    torch_threads.enable(threads)
    from ..recovery import recover as run_recovery
    from ..budget import parse_batch_size
    from ..experiments import parse_float_list

    if json_output:
        require_stdout()
    check_out_dir(out)
    patterns = tuple(p.strip() for p in pattern.split(",") if p.strip() and p.strip() != "uniform")
    settings = RecoverySettings(t0=parse_float_list(t0, "--t0"), n=n, steps_per_unit=steps_per_unit, seed=seed,
                                batch_size=parse_batch_size(batch_size), patterns=patterns,
                                precision=precision)
    settings.validate()
    result = run_recovery(checkpoint, train=train_data, test=test_data, settings=settings, weights=weights,
                          device=resolve_device(device), prompt=prompt,
                          **load_options(tokenizer, trust_remote_code, time_input, schedule))
    if out is not None:
        from ..report import recovery_files

        write_report_set({out / name: data for name, data in recovery_files(result).items()})
    if json_output:
        print_json(result.summary(include_timings=False))
    else:
        print_recovery(result, out)
    if exit_zero:
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(GATE_CODES.get(result.verdict, EXIT_INCONCLUSIVE))




def print_recovery(result, out) -> None:
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
    if result.patterns:
        print_patterns(result)
    if result.documents is not None:
        print_documents(result.documents)
    if out is not None:
        console.print(f"report → {escape(str(out))}", highlight=False)


def print_patterns(result) -> None:
    """Exact completion per conditioning pattern, labelled as beside the verdict."""
    from rich.table import Table

    table = Table(title="conditioning patterns: exact completion (95% CI) · beside the verdict, never deciding it")
    for col in ("pattern", "split", "n", "regenerated", "exact completion", "token accuracy"):
        table.add_column(col)
    f = lambda v: "–" if v is None or v != v else f"{v:.3f}"  # noqa: E731
    for p in result.patterns:
        lo, hi = p["exact_completion_ci"]
        table.add_row(p["pattern"], p["split"], str(p["n"]), f"{p['regenerated_tokens']:.1f}",
                      f"{f(p['exact_completion'])} [{f(lo)}, {f(hi)}]", f(p["token_accuracy"]))
    console.print(table)
    for g in result.pattern_gaps:
        console.print(f"{g['pattern']}: train − test exact completion = {g['gap']:+.3f} "
                      f"[{g['gap_ci'][0]:+.3f}, {g['gap_ci'][1]:+.3f}]", highlight=False)


def print_documents(doc: dict) -> None:
    """The most exposed training blocks (memaudit.documents), labelled as beside the verdict."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"most exposed training blocks at t0={doc['t0']:g} (held-out mean restoration "
                        f"{doc['test_mean_restoration']:.3f}) · beside the verdict")
    for col in ("example", "restoration", "pct vs test", "completion", "duplication", "stored", "text"):
        table.add_column(col)
    for e in doc["most_exposed"][:5]:
        comp = ", ".join(f"{k} {v:.2f}" for k, v in e["completion"].items()) or "–"
        text = (e["text"] or "")[:60].replace("\n", "⏎")
        table.add_row(str(e["example_id"]), f"{e['restoration_rate']:.3f}",
                      f"{e['restoration_percentile_vs_test']:.2f}", comp, str(e["duplication_count"]),
                      "yes" if e["stored"] else "no", escape(text))
    console.print(table)
    lo, hi = doc["stored_share_ci"]
    console.print(f"stored training blocks: {doc['n_stored']} of {doc['n_train']} (above the held-out "
                  f"{doc['stored_quantile']:.0%} quantile {doc['stored_threshold']:.3f}); share of the training set "
                  f"stored ≈ {doc['stored_share']:.3f} [{lo:.3f}, {hi:.3f}]", highlight=False)
