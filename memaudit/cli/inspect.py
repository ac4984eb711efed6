"""`memaudit inspect`: what a checkpoint is and what a scan would use."""
from __future__ import annotations

import typer

from ..progress import console
from .errors import cli_errors
from .options import Checkpoint, JsonOutput, Weights, print_json, require_stdout


@cli_errors
def inspect(
    checkpoint: Checkpoint,
    weights: Weights = None,
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Accepted for compatibility; memaudit never runs checkpoint code."),
    json_output: JsonOutput = False,
):
    """Show a checkpoint's family, architecture, vocabulary, tokenizer, EMA and what a scan would use."""
    from rich.markup import escape

    from ..inspect import format_summary, inspect_checkpoint

    if json_output:
        require_stdout()
    doc = inspect_checkpoint(checkpoint, weights=weights, trust_remote_code=trust_remote_code)
    if json_output:
        print_json(doc)
        return
    width = max(len(label) for label, _ in format_summary(doc))
    for label, value in format_summary(doc):
        console.print(f"[bold]{label:<{width}}[/]  {escape(value)}", highlight=False, soft_wrap=True)
