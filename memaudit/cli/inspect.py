"""`memaudit inspect`: what a checkpoint is and what a scan would use."""
from __future__ import annotations

import os
import sys

from rich.console import Console

from .errors import cli_errors
from .options import Checkpoint, JsonOutput, ScheduleSpec, TimeInput, TokenizerName, TrustRemoteCode, Weights, \
    load_options, print_json, require_stdout


@cli_errors
def inspect(
    checkpoint: Checkpoint,
    weights: Weights = None,
    tokenizer: TokenizerName = None,
    trust_remote_code: TrustRemoteCode = False,
    time_input: TimeInput = None,
    schedule: ScheduleSpec = None,
    json_output: JsonOutput = False,
):
    """Show a checkpoint's family, architecture, vocabulary, tokenizer, EMA and what a scan would use (on stdout)."""
    from rich.markup import escape

    from ..inspect import format_summary, inspect_checkpoint

    if json_output:
        require_stdout()
    doc = inspect_checkpoint(checkpoint, weights=weights, **load_options(tokenizer, trust_remote_code, time_input,
                                                                         schedule))
    if json_output:
        print_json(doc)
        return
    # The description is the command's output: stdout (`> file`, `| grep`), never cut to a width.
    out = Console(file=sys.stdout, no_color=bool(os.environ.get("NO_COLOR")) or None, soft_wrap=True)
    width = max(len(label) for label, _ in format_summary(doc))
    for label, value in format_summary(doc):
        out.print(f"[bold]{escape(label):<{width}}[/]  {escape(value)}", highlight=False, soft_wrap=True)
