"""`memaudit canary`: the secret-sharer exposure of canaries planted in the training data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..progress import console
from .errors import EXIT_MEMORIZING, EXIT_OK, UsageError, cli_errors
from .options import Checkpoint, Device, ExitZero, JsonOutput, Seed, TokenizerName, TrustRemoteCode, Weights, \
    check_out_dir, print_json, require_stdout, resolve_device, write_report_set

EXIT_EXPOSED = EXIT_MEMORIZING


@cli_errors
def canary(
    checkpoint: Checkpoint,
    template: str = typer.Option(..., "--template", help="Canary template with placeholders {ALPHABET:N}, "
                                 "ALPHABET one of hex, HEX, digits, lower, upper, alpha, alnum; e.g. "
                                 "\"API_KEY = 'sk_live_{hex:16}'\"."),
    inserted: Optional[list[str]] = typer.Option(None, "--inserted", help="An inserted canary: its full text or "
                                                 "its placeholder value(s). Repeatable."),
    inserted_file: Optional[Path] = typer.Option(None, "--inserted-file", help="A file of inserted canaries, one "
                                                 "per line."),
    candidates: int = typer.Option(1000, "--candidates", min=10, help="Values drawn from the template to rank "
                                   "each canary among (the exposure resolvable grows as log2 of this)."),
    estimator: str = typer.Option("clean", "--estimator", help="clean (log-likelihood of the secret's tokens given "
                                  "the rest, from x̂ on the clean text; default: best separated on the planted "
                                  "model) | pll (one secret token at a time replaced by noise) | nelbo. "
                                  "docs/method.md compares them."),
    threshold: float = typer.Option(6.0, "--threshold", help="Exposure (bits) whose 95% lower bound fails the "
                                    "gate (exit 1)."),
    seed: Seed = 0,
    weights: Weights = None,
    tokenizer: TokenizerName = None,
    trust_remote_code: TrustRemoteCode = False,
    out: Optional[Path] = typer.Option(None, "--out", help="Write canary.json here."),
    device: Device = "auto",
    exit_zero: ExitZero = False,
    json_output: JsonOutput = False,
):
    """Exposure of planted canaries (secret sharer): each inserted value's rank by the model's
    likelihood among values drawn from the same template.

    Exit codes: 0 no canary exposed · 1 a canary's exposure lower bound ≥ --threshold · 2 usage ·
    4 load · 5 runtime."""
    from ..adapters import as_denoiser
    from ..canary import run_canaries

    if json_output:
        require_stdout()
    check_out_dir(out)
    values = list(inserted or [])
    if inserted_file is not None:
        try:
            values += [line.strip() for line in inserted_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read --inserted-file {inserted_file}: {e}") from None
    denoiser = as_denoiser(checkpoint, weights, resolve_device(device), tokenizer=tokenizer,
                           trust_remote_code=trust_remote_code)
    result = run_canaries(denoiser, template, values, candidates=candidates, seed=seed, estimator=estimator,
                          threshold=threshold)
    summary = result.summary()
    if out is not None:
        from ..io import json_text

        write_report_set({out / "canary.json": (json_text(summary) + "\n").encode("utf-8")})
    if json_output:
        print_json(summary)
    else:
        print_canaries(result)
    if exit_zero:
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_EXPOSED if result.exposed else EXIT_OK)


def print_canaries(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"canary exposure · {result.estimator} · {result.candidates} candidates · "
                        f"|S| = 2^{result.log2_space:.1f} (95% CI)")
    for col in ("canary", "outscored by", "exposure (bits)", "normal-fit", "exposed"):
        table.add_column(col)
    for c in result.canaries:
        lo, hi = c["exposure_ci"]
        table.add_row(escape(c["text"]), f"{c['outscored_by']}/{c['candidates']}",
                      f"{c['exposure']:.2f} [{lo:.2f}, {hi:.2f}]", f"{c['exposure_normal_fit']:.1f}",
                      "yes" if c["exposed"] else "no")
    console.print(table)
    console.print(f"[bold]{result.verdict}[/]: {len(result.exposed)} of {len(result.canaries)} canaries with an "
                  f"exposure lower bound ≥ {result.threshold:g} bits", highlight=False)
