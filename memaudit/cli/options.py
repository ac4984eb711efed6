"""Options shared by several commands, declared once (typer `Annotated` aliases), and the helpers
every command uses for stdout and report files."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import OutputError, UsageError

# Seeds feed torch generators through derived streams (seed·100003 + batch); 32 bits keep every
# derived seed inside the generator's 64-bit range.
SEED_MAX = 2**32 - 1
# Upper bounds of counts (issue 24): a typo such as --samples 2**63 is a usage error up front, not a
# run that allocates until it is killed.
SAMPLES_MAX = 1_000_000
STEPS_MAX = 1_000_000
N_TRAIN_MAX = 10**12
SEQ_LEN_MAX = 1 << 16
VOCAB_MAX = 1 << 22
DATA_SOURCES = "synthetic | docs | stdlib | templates | records | code | PATH (.txt, .jsonl, .parquet)"
PRESET_NAMES = "nano, micro, tiny, small, medium"
TRAIN_SOURCES = ("auto (native checkpoints: the model's own training subset) | .txt/.jsonl/.parquet (tokenized "
                 "with the checkpoint's tokenizer) | .npy ids")


def _check_weights(value: Optional[str]) -> Optional[str]:
    if value not in (None, "ema", "raw"):
        raise typer.BadParameter("must be ema or raw")
    return value


def _check_time_input(value: Optional[str]) -> Optional[str]:
    if value not in (None, "sigma", "t", "none"):
        raise typer.BadParameter("must be sigma, t or none")
    return value


def _check_schedule(value: Optional[str]) -> Optional[str]:
    if value is None:
        return value
    from ..adapters.remote import parse_schedule

    try:
        parse_schedule(value)
    except ValueError as e:
        raise typer.BadParameter(str(e).removeprefix("--schedule ")) from None
    return value


Checkpoint = Annotated[str, typer.Argument(help="Checkpoint directory, file or hub id (org/name[@revision]).")]
Checkpoints = Annotated[Optional[list[str]], typer.Argument(
    help="Checkpoint directories, files, globs or hub ids (org/name[@revision]); more than one (or a glob, "
    "--from-list or --ray) scans each into --out DIR/<checkpoint>/ plus DIR/scans.parquet and DIR/index.html.",
    show_default=False)]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray", metavar="[ADDRESS]",
    help="Run the tasks on Ray (extra memaudit-dlm[ray]): --ray alone starts a local Ray instance; --ray auto or "
    "--ray ray://HOST:PORT joins a cluster (docs/distributed.md).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, show_default=False,
    help="CPU threads for torch. Default: for models under 2 M parameters the cores the load average leaves "
         "free (a busy core slows a small network 9x: docs/performance.md), else torch's default; "
         "OMP_NUM_THREADS or MEMAUDIT_THREADS, when set, are respected.")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (nothing on failure).")]
Weights = Annotated[Optional[str], typer.Option("--weights", callback=_check_weights,
                                                help="ema | raw (default: ema when present).")]
TokenizerName = Annotated[Optional[str], typer.Option(
    "--tokenizer", help="Tokenizer: a tokenizer.json, a tokenizer folder (vocab.txt, vocab.json + merges.txt, "
    "tokenizer_config.json) or a hub name (bert-base-uncased, gpt2, org/name[@revision]). Default: the "
    "checkpoint's own, one beside it, or the one its config names.")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Load a family memaudit does not load natively through the checkpoint's own "
    "modeling code (transformers, trust_remote_code=True): that code is executed, and every report says so. "
    "Native families load natively even with it.")]
TimeInput = Annotated[Optional[str], typer.Option(
    "--time-input", callback=_check_time_input, help="With --trust-remote-code: what the network's time argument "
    "is: sigma | t | none (default: from its config).")]
ScheduleSpec = Annotated[Optional[str], typer.Option(
    "--schedule", callback=_check_schedule, help="With --trust-remote-code: the noise schedule, loglinear[:EPS] "
    "(default: from its config).")]
Seed = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Seed (0 … 2^32−1).")]
DataSeed = Annotated[int, typer.Option("--data-seed", min=0, max=SEED_MAX,
                                       help="Seed of the corpus (Markov chain / block permutation).")]
Data = Annotated[str, typer.Option("--data", help=DATA_SOURCES)]
Preset = Annotated[str, typer.Option("--preset", help=f"Model preset: {PRESET_NAMES}.")]
SeqLen = Annotated[Optional[int], typer.Option("--seq-len", min=1, max=SEQ_LEN_MAX, help="Default: 32 synthetic, 64 text.")]
VocabSize = Annotated[Optional[int], typer.Option("--vocab-size", min=2, max=VOCAB_MAX,
                                                  help="BPE vocabulary for text (default 512); symbols of the "
                                                  "synthetic chain (default 32).")]
ExitZero = Annotated[bool, typer.Option("--exit-zero", help="Exit 0 for any completed run (errors still fail).")]
Workers = Annotated[int, typer.Option("--workers", min=1, max=1024, help="Points trained in parallel processes "
                                      "(single-threaded each on CPU).")]
Deadline = Annotated[Optional[float], typer.Option("--deadline", help="Wall-clock budget in seconds of the training "
                                                   "phase; points still training then are evaluated as they are "
                                                   "(marked truncated).")]
ScanSteps = Annotated[Optional[int], typer.Option("--scan-steps", min=1, max=STEPS_MAX, help="Scan sampler steps (default: the scan's).")]
RecoverN = Annotated[int, typer.Option("--recover-n", min=1, max=SAMPLES_MAX, help="Recovery examples per split.")]
StepsPerUnit = Annotated[int, typer.Option("--steps-per-unit", min=1, max=STEPS_MAX, help="Reverse steps per unit of time: t0=0.25 "
                                           "runs 0.25·this (reference: 1000).")]
Samples = Annotated[int, typer.Option("--samples", min=1, max=SAMPLES_MAX, help="Number of generated samples per scan "
                                      "(the rule needs a minimum); with adaptive sampling, the most it draws.")]
BatchSize = Annotated[str, typer.Option("--batch-size", help="Sequences per network call: auto (the largest that "
                                        "fits --max-memory) or a number (refused up front when it cannot fit). "
                                        "Never changes a result.")]
Precision = Annotated[str, typer.Option("--precision", help="The network's precision: auto (bfloat16 on a CUDA "
                                        "GPU, float32 elsewhere) | float32 | bfloat16 | float16; probabilities, "
                                        "entropies and the posterior stay float32/float64 whatever it is.")]
MaxMemory = Annotated[Optional[str], typer.Option("--max-memory", help="Memory the run may use, e.g. 4GiB or "
                                                  "500MB (default: half of what is available to the process: "
                                                  "free memory, cgroup and RLIMIT_AS limits; on a GPU its free "
                                                  "memory).")]


def load_options(tokenizer: Optional[str], trust_remote_code: bool, time_input: Optional[str],
                 schedule: Optional[str]) -> dict:
    """The loading options of scan / recover / sample / inspect, as memaudit.load's keywords."""
    return {"tokenizer": tokenizer, "trust_remote_code": trust_remote_code, "time_input": time_input,
            "schedule": schedule}


def resolve_device(device: str, remote: bool = False) -> str:
    """The device a command runs on. remote (--ray): the tasks run on the cluster's machines, so
    --device cuda is accepted without a GPU here ('auto' still resolves on this machine)."""
    import torch

    if remote and device.startswith("cuda"):
        return device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return device


# ------------------------------------------------------------------------------------------ stdout
def require_stdout() -> None:
    """Fail before any work when the command's output has nowhere to go (stdout closed)."""
    if sys.stdout is None or getattr(sys.stdout, "closed", False):
        raise OutputError("cannot write to stdout (it is closed); nothing was run")


def write_out(text: str) -> None:
    from ..io import write_stdout

    try:
        write_stdout(text)
    except (OSError, ValueError) as e:   # closed (None or ValueError on a closed file) or broken pipe
        _silence_stdout()
        raise OutputError(f"cannot write to stdout ({e}); no output was lost silently") from None


def print_json(document: dict) -> None:
    """The one JSON document on stdout: strict JSON (NaN/inf become null), sorted keys."""
    from ..io import json_text

    write_out(json_text(document, ensure_ascii=True) + "\n")


def _silence_stdout() -> None:
    """After a failed write, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    from ..io import point_at_devnull

    point_at_devnull(1)
    sys.stdout = open(os.devnull, "w")


# ------------------------------------------------------------------------------------ report files
def check_output_targets(paths) -> None:
    """Before any work: every report path must be a regular file or absent, in a directory memaudit
    may create or write; else a usage error naming the path. Leftovers of killed runs are cleaned."""
    from ..io import recover_file_sets

    for path in paths:
        path = Path(path)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise UsageError(f"cannot write {path}: it exists and is not a regular file")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UsageError(f"cannot write {path}: {ancestor} is not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write {path}: permission denied in {ancestor}")
        if path.parent.is_dir():
            recover_file_sets(path.parent)
    check_distinct_outputs(paths)


def check_distinct_outputs(paths) -> None:
    """Two outputs of one command that name the same file (`--junit out/summary.json --out out`,
    `--junit x --summary-md x`), or a file and a folder holding others, are a usage error up front."""
    seen: dict[Path, Path] = {}
    for path in map(Path, paths):
        try:
            key = path.parent.resolve() / path.name
        except (OSError, RuntimeError):
            key = Path(os.path.abspath(path))
        if key in seen:
            raise UsageError(f"{seen[key]} and {path} name the same file; give each output its own path")
        seen[key] = path
    for key, path in seen.items():
        for parent in key.parents:
            if parent in seen:
                raise UsageError(f"{seen[parent]} is an output file and {path} an output inside it; "
                                 "give each output its own path")


def check_out_dir(out: Optional[Path]) -> None:
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")


def write_report_set(files: dict) -> None:
    """All report files of one command as one set (memaudit.io.write_file_set)."""
    from ..io import write_file_set

    if not files:
        return
    try:
        write_file_set(files)
    except OSError as e:
        raise OutputError(f"could not write the report ({e.strerror or e}: {e.filename or ''}); "
                          f"the previous report files are unchanged") from None
