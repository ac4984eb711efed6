"""Many checkpoints in one scan: every checkpoint of a training run, or a model zoo.

    scan_many(["runs/a/checkpoint-1000", "runs/a/checkpoint-2000"], ScanSettings(), out="audit")

Layout of an --out directory (the driver writes every file; each set atomically):

    OUT/<slug>/samples.parquet, tokens.parquet, summary.json, report.html   one report per checkpoint
    OUT/scans.parquet       one row per checkpoint: checkpoint, step, verdict, reason, statistics, CIs
    OUT/index.html          the statistics across checkpoints (against the training step when known)

Each checkpoint is one task of a backend (memaudit.experiments.backends: this process or a
Ray cluster); a task scans and renders its report as bytes, the driver writes them as each scan
arrives (so an interrupted run keeps the reports that finished), the table and page last. The
seed of every scan is the scan's seed, whatever worker runs it and in whatever order, so a report
is byte-identical to the one `memaudit scan CKPT --out DIR` writes for the same checkpoint.

Resuming (opt-in: `resume=True`, `scan --resume`): nothing in OUT is trusted. A checkpoint is not
scanned again only when this user's ledger (memaudit.experiments.resume, outside OUT) vouches for
its report: same checkpoint, settings, rule and weights, every file under the checkpoint and every
report file hashing to what was recorded when the report was written. Its row then comes from that
report and is marked reused in every output (the table, scans.parquet's `reused` column, the
index page, --json, JUnit and Markdown). Editing the folder can only cause a re-scan, never change
a verdict or an exit code.
"""
from __future__ import annotations

import glob as globlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..errors import UsageError
from ..exit_codes import EXIT_LOAD, gate_exit_code, most_severe
from ..report.files import write_files
from .backends import LocalBackend, Task, TaskBackend, TaskOutcome, TaskView
from .resume import checkpoint_hashes, record, verified_report

GLOB_CHARS = re.compile(r"[*?\[]")
STEP_IN_NAME = re.compile(r"(?:checkpoint|step|ckpt|iter)[-_]?(\d+)", re.IGNORECASE)
TABLE_NAME = "scans.parquet"
INDEX_NAME = "index.html"
# Statistics of the table: each with its confidence interval where the scan has one.
TABLE_STATISTICS = ("mean_entropy", "entropy_ratio", "low_entropy_fraction", "near_zero_sample_fraction",
                    "basin_return_rate", "duplicate_rate", "fixed_point_fraction", "mean_fixed_point_distance")


class BatchError(UsageError):
    """Bad checkpoint list (no match for a glob, an unreadable --from-list): exit 2."""


# ------------------------------------------------------------------------------- the checkpoints
def natural_key(text: str):
    """checkpoint-200 before checkpoint-1000."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


FROM_LIST_MAX_BYTES = 16 * 2**20   # 16 MiB: ~100,000 paths


def expand_checkpoints(arguments: Sequence[str], from_list: str | Path | None = None) -> list[str]:
    """Paths, globs and hub ids, plus the lines of a list file (blank lines and # comments
    skipped), in the order given; a glob's matches in natural order; duplicates dropped. A glob
    that matches nothing stays as given (see is_glob)."""
    items = list(arguments)
    if from_list is not None:
        try:   # a list of paths, read from a file the user names: bounded (/dev/zero, a FIFO, a sparse file)
            with open(from_list, "rb") as handle:
                raw = handle.read(FROM_LIST_MAX_BYTES + 1)
            if len(raw) > FROM_LIST_MAX_BYTES:
                raise BatchError(f"--from-list {from_list} is longer than {FROM_LIST_MAX_BYTES // 2**20} MiB; "
                                 "a list of checkpoints is a few kilobytes")
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BatchError(f"cannot read --from-list {from_list}: {getattr(e, 'strerror', None) or e}") from None
        items += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    found: list[str] = []
    for item in items:
        if is_glob(item):
            found += sorted(globlib.glob(item), key=natural_key)
        else:
            found.append(item)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise BatchError("missing argument CHECKPOINT (paths, globs or hub ids, or --from-list FILE)")
    return unique


def is_glob(item: str) -> bool:
    """A pattern that matches existing paths and is not itself one: it names several checkpoints.
    A pattern that matches nothing is taken as the path it spells (which then fails to load, exit
    4, like any missing checkpoint), so a path with brackets in its name is never misread."""
    return bool(GLOB_CHARS.search(item)) and not Path(item).exists() and bool(globlib.glob(item))


def is_local(checkpoint: str) -> bool:
    return Path(checkpoint).exists()


def checkpoint_slugs(checkpoints: Sequence[str]) -> dict[str, str]:
    """A directory name per checkpoint, unique and stable: local paths relative to their common
    parent directory, hub ids as org-name-revision; any other character becomes '-'."""
    local = [Path(c).resolve() for c in checkpoints if is_local(c)]
    parents = [p.parent for p in local]
    common = Path(_common_path(parents)) if parents else None
    slugs: dict[str, str] = {}
    taken: set[str] = {TABLE_NAME, INDEX_NAME}   # a checkpoint named index.html gets index.html-2
    for c in checkpoints:
        name = str(Path(c).resolve().relative_to(common)) if is_local(c) and common is not None else c
        slug = re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-.") or "checkpoint"
        base, k = slug, 2
        while slug in taken:
            slug, k = f"{base}-{k}", k + 1
        taken.add(slug)
        slugs[c] = slug
    return slugs


def _common_path(paths: list[Path]) -> str:
    import os

    return os.path.commonpath([str(p) for p in paths])


def training_step(checkpoint: str) -> int | None:
    """The training step of a checkpoint: what its config records (memaudit's trainer writes
    training.steps_done), else a number in its name (checkpoint-1000, step_500, …)."""
    if is_local(checkpoint):
        config = Path(checkpoint) / "config.json"
        try:
            done = json.loads(config.read_text(encoding="utf-8")).get("training", {}).get("steps_done")
            if isinstance(done, int):
                return done
        except (OSError, ValueError, AttributeError):
            pass
    match = None
    for match in STEP_IN_NAME.finditer(checkpoint):
        pass
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------ one task
def scan_task(checkpoint: str, settings_dict: dict, weights: str | None, device: str, rule,
              execution: dict | None = None) -> dict:
    """One checkpoint, where the backend runs it: scan it and render its report as bytes.
    execution: --batch-size and --max-memory (not in the report's settings; they never change a result).
    → {"files": {name: bytes}, "summary": the summary document, "timings": seconds}."""
    from ..probe import ScanSettings
    from ..probe import scan as run_scan
    from ..report import render_report
    from ..report.tables import summary_document

    settings = ScanSettings(**{**settings_dict, **(execution or {}), "t_profile": tuple(settings_dict["t_profile"])})
    from ..progress import nested

    result = run_scan(checkpoint, settings=settings, weights=weights, device=device, rule=rule,
                      show_progress=nested())
    return {"files": render_report(result), "summary": summary_document(result), "timings": result.timings}


# ----------------------------------------------------------------------------------- resumption
def same_settings(recorded: dict, requested: dict) -> bool:
    """Whether a report's settings are the requested ones. Settings the scan resolves per model
    (ScanSettings.PER_MODEL: the layout and the network precision, 'auto' until the checkpoint is
    loaded) match any value a report recorded for them when 'auto' was requested."""
    from ..probe import PER_MODEL_SETTINGS

    if recorded.keys() != requested.keys():
        return False
    return all(recorded[k] == v or (k in PER_MODEL_SETTINGS and v == "auto") for k, v in requested.items())


# ------------------------------------------------------------------------------------- the run
@dataclass
class CheckpointScan:
    """One checkpoint's outcome: its summary document when scanned (or reused), else the error."""

    checkpoint: str
    slug: str
    step: int | None
    summary: dict | None = None
    error: str | None = None
    failure_code: int = 0          # memaudit.exit_codes: 2 usage, 4 could not load, 5 runtime (lost worker too)
    reused: bool = False
    timings: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        return None if self.summary is None else self.summary["verdict"]

    def exit_code(self, fail_on: str = "memorizing", exit_zero: bool = False) -> int:
        if self.summary is None:
            return self.failure_code
        return gate_exit_code(self.verdict, fail_on=fail_on, exit_zero=exit_zero, stored_found=self.stored_found)

    @property
    def stored_found(self) -> bool:
        """A stored-subset finding in this checkpoint's report (as probe.ScanResult.stored_found)."""
        if self.summary is None:
            return False
        stored = self.summary.get("stored_subset") or {}
        documents = (self.summary.get("training_data") or {}).get("documents") or {}
        return bool(stored.get("found")) or bool(documents.get("finding"))

    def document(self, fail_on: str = "memorizing", exit_zero: bool = False) -> dict:
        """The entry of this checkpoint in `scan --json`'s list."""
        doc = {"checkpoint": self.checkpoint, "slug": self.slug, "step": self.step,
               "exit_code": self.exit_code(fail_on, exit_zero), "reused": self.reused}
        if self.summary is None:
            return {**doc, "verdict": None, "error": self.error}
        summary = {k: v for k, v in self.summary.items() if k != "provenance"}
        return {**summary, **doc, "timings": self.timings}


@dataclass
class BatchResult:
    scans: list[CheckpointScan]
    settings: dict
    rule: dict
    out: Path | None = None
    files: dict = field(default_factory=dict)

    def exit_code(self, fail_on: str = "memorizing", exit_zero: bool = False) -> int:
        """The most severe over all checkpoints: 5 > 4 > 2 > 1 > 3 > 0 (memaudit.exit_codes)."""
        return most_severe(s.exit_code(fail_on, exit_zero) for s in self.scans)

    def summary(self, fail_on: str = "memorizing", exit_zero: bool = False) -> dict:
        """The one document of `scan --json` with several checkpoints."""
        return {"checkpoints": [s.document(fail_on, exit_zero) for s in self.scans],
                "exit_code": self.exit_code(fail_on, exit_zero), "settings": self.settings, "rule": self.rule,
                "out": None if self.out is None else str(self.out), "memaudit_version": __version__}

    def table(self):
        """scans.parquet as a pandas DataFrame."""
        return scans_frame(self.scans)


def scan_many(checkpoints: Sequence[str], settings=None, out: str | Path | None = None, weights: str | None = None,
              device: str = "cpu", rule=None, backend: TaskBackend | None = None, resume: bool = False,
              show_progress: bool | None = None) -> BatchResult:
    """Scan every checkpoint on `backend` (default: this process) and, with `out`, write one
    report per checkpoint (OUT/<slug>/), scans.parquet and index.html. A checkpoint that fails
    (cannot be loaded, runtime failure, lost worker) is a row with its error, never dropped."""
    from ..probe import ScanSettings
    from ..verdict import load_rule

    rule = load_rule(rule)
    resolved = (settings or ScanSettings()).resolve(rule, device)
    resolved.validate()
    settings_dict, rule_description = resolved.to_dict(), rule.describe()
    execution = {"batch_size": resolved.batch_size, "max_memory": resolved.max_memory}
    checkpoints = list(dict.fromkeys(checkpoints))
    slugs = checkpoint_slugs(checkpoints)
    out = None if out is None else Path(out)
    scans = {c: CheckpointScan(c, slugs[c], training_step(c)) for c in checkpoints}
    tasks = []
    hashes: dict[str, dict | None] = {}
    for c in checkpoints:
        previous = None
        if out is not None and resume and is_local(c):
            previous = verified_report(out / slugs[c], c, settings_dict, rule_description, weights, same_settings)
            hashes[c] = None if previous is not None else checkpoint_hashes(c)   # as the scan will read it
        if previous is not None:
            scans[c].summary, scans[c].reused = previous, True
        else:
            tasks.append(Task(key=c, function=scan_task,
                              args=(c, settings_dict, weights, device, rule, execution),
                              num_gpus=1 if device.startswith("cuda") else 0))
    backend = backend or LocalBackend()

    def on_outcome(outcome: TaskOutcome) -> None:
        """On the driver, as each scan arrives: record it and write its report directory (one set)."""
        entry = scans[outcome.key]
        if not outcome.ok:
            entry.error, entry.failure_code = outcome.error, outcome.exit_code
            return
        entry.summary, entry.timings = outcome.value["summary"], outcome.value["timings"]
        if out is not None:
            write_files(out / entry.slug, outcome.value["files"])
            if hashes.get(outcome.key) is not None:
                record(out / entry.slug, outcome.key, settings_dict, rule_description, weights, entry.verdict,
                       outcome.value["files"], hashes[outcome.key])

    with TaskView([t.key for t in tasks], enabled=show_progress, title=f"memaudit scan · {backend.name}",
                  log_failures=False) as view:   # failures: in the table and the last line
        if tasks:
            backend.run(tasks, view, on_outcome=on_outcome)
    result = BatchResult(scans=[scans[c] for c in checkpoints], settings=settings_dict, rule=rule_description, out=out)
    if out is not None:
        write_files(out, {TABLE_NAME: scans_parquet(result), INDEX_NAME: index_page(result)})
        result.files = {name: out / name for name in (TABLE_NAME, INDEX_NAME)}
    return result


# ----------------------------------------------------------------------------------- the outputs
def scan_row(s: CheckpointScan) -> dict:
    summary = s.summary or {}
    row = {"checkpoint": s.checkpoint, "slug": s.slug, "step": s.step,
           "family": (summary.get("model") or {}).get("family"),
           "status": "scanned" if s.summary is not None else ("load_failed" if s.failure_code == EXIT_LOAD else "failed"),
           "verdict": summary.get("verdict"), "reason": summary.get("reason"), "error": s.error,
           "n_samples": summary.get("n_samples"), "reused": bool(s.reused)}
    for key in TABLE_STATISTICS:
        value = summary.get(key)
        row[key] = None if value is None else float(value)
        ci = summary.get(f"{key}_ci")
        if f"{key}_ci" in summary or key in ("mean_entropy", "entropy_ratio"):
            lo, hi = (ci if ci else (None, None))
            row[f"{key}_lo"] = None if lo is None else float(lo)
            row[f"{key}_hi"] = None if hi is None else float(hi)
    return row


def scans_frame(scans: Sequence[CheckpointScan]):
    import pandas as pd

    rows = [scan_row(s) for s in scans]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    frame = pd.DataFrame([{k: r.get(k) for k in columns} for r in rows], columns=columns)
    frame["step"] = frame["step"].astype("Int64")
    frame["n_samples"] = frame["n_samples"].astype("Int64")
    return frame


def scans_parquet(result: BatchResult) -> bytes:
    import pyarrow as pa

    from ..io import json_text
    from ..report.tables import METADATA_KEY, parquet_bytes

    table = pa.Table.from_pandas(result.table(), preserve_index=False)
    from ..provenance import SCHEMA_VERSION

    meta = {"schema_version": SCHEMA_VERSION, "memaudit_version": __version__, "settings": result.settings,
            "rule": result.rule,
            "units": "nats; rates are fractions", "n_checkpoints": len(result.scans)}
    table = table.replace_schema_metadata({METADATA_KEY: json_text(meta, compact=True, ensure_ascii=True).encode()})
    return parquet_bytes(table)


def index_page(result: BatchResult) -> bytes:
    from ..report.batch_page import batch_index_html

    return batch_index_html(result.table(), result.settings, result.rule).encode("utf-8")
