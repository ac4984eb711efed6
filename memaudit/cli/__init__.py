"""The `memaudit` command line: a thin Typer app over the Python API.

The root only composes: one module per command (scan, recover, canary, train, sweep, calibrate, validate,
inspect, sample, demo), options shared by several commands declared once (options.py), one table from
exceptions to exit codes (errors.py). Logs, tables and progress go to stderr; --json prints exactly
one JSON document on stdout (nothing on failure). The console script starts in
memaudit.entrypoint, which holds Ctrl-C while this package and torch load, then runs `app`.
"""
from __future__ import annotations

import typer

from . import calibrate, canary, demo, inspect, recover, sample, scan, sweep, train, validate, verify
from .errors import (EXIT_INCONCLUSIVE, EXIT_INTERRUPTED, EXIT_LOAD, EXIT_MEMORIZING, EXIT_OK,  # noqa: F401
                     EXIT_RUNTIME, EXIT_USAGE, MemauditGroup, OutputError, UsageError, cli_errors, emit_error, fail)
from .options import print_json  # noqa: F401

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=MemauditGroup,
                  rich_markup_mode=None,   # help is printed literally: memaudit-dlm[ray], org/name[@revision]
                  help="Tell whether a uniform-state diffusion language model memorizes or generalizes.")

def _print_version(value: bool) -> None:
    if value:
        from .. import __version__
        from ..io import write_stdout

        write_stdout(f"memaudit {__version__}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print memaudit's version and exit.")) -> None:
    """Tell whether a uniform-state diffusion language model memorizes or generalizes."""
    from .. import heartbeat, threads

    heartbeat.enable()   # without a terminal, progress as plain lines on stderr (memaudit.heartbeat)
    threads.enable()     # torch threads chosen by the model's size unless --threads / MEMAUDIT_THREADS


# Registration order is the order of `memaudit --help` and docs/cli.md.
app.command("train")(train.train)
app.command("sample")(sample.sample)
app.command("inspect")(inspect.inspect)
app.command("recover")(recover.recover)
app.command("canary")(canary.canary)
app.command("sweep")(sweep.sweep)
app.command("calibrate")(calibrate.calibrate)
app.command("validate")(validate.validate)
app.command("scan", help=scan.HELP)(scan.scan)
app.command("demo")(demo.demo)
app.command("verify")(verify.verify)


def preload() -> None:
    """Import what every command needs, up front (the entry point holds Ctrl-C meanwhile)."""
    import torch  # noqa: F401

    from .. import adapters, probe, recovery, report, train as training, verdict  # noqa: F401

    adapters.REGISTRY.load_all()   # the adapter modules load lazily otherwise, i.e. after Ctrl-C is released
