"""The transition experiment: train at several training-set sizes, recover and scan each point.

    sweep(SweepSettings(sizes=(8, 64, 512, 4096, 65536), data="synthetic", preset="nano"), out)

Layout of a sweep directory (everything written atomically; the points: memaudit.experiments.points):

    OUT/points/n000064/...             one point: checkpoint/, recovery/, scan/, point.json
    OUT/sweep.parquet                  tidy table: one row per size × split × t0, plus scan columns
    OUT/sweep.json                     settings and each point's verdicts and timings
    OUT/*.png, OUT/index.html          plots; index.html embeds them (memaudit.report.sweep_page)

Training sets are nested prefixes of one permutation (memaudit.data), so a sweep varies only the
amount of data. Points train in parallel processes (`workers`, memaudit.experiments.pool), each
single-threaded on the CPU; on CUDA the processes share the GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from .points import load_points, point_finished, prepare_corpus
from .pool import SweepView, run_jobs
from .settings import PRIMARY_T0, SweepError, SweepSettings
from .tables import build_table, table_bytes


@dataclass
class SweepResult:
    out: Path
    settings: SweepSettings
    table: object                         # pandas DataFrame (tidy)
    points: dict[int, dict]               # n_train → point.json document
    reused: list[int] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)   # not run before the deadline
    files: dict[str, Path] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def summary(self) -> dict:
        pts = []
        for n in sorted(self.points):
            p = self.points[n]
            g = _gap_at(p, PRIMARY_T0)
            pts.append({"n_train": n, "steps": p["training"].get("steps_done"),
                        "final_loss": p["training"].get("final_loss"), "truncated": p.get("truncated", False),
                        "recovery_verdict": p["recovery"]["verdict"], "recovery_reason": p["recovery"]["reason"],
                        "train_recovery": g.get("train"), "test_recovery": g.get("test"), "t0": g.get("t0"),
                        "scan_verdict": p.get("scan_verdict_current"), "scan_reason": p.get("scan_reason_current"),
                        "mean_entropy": p["scan"]["stats"]["mean_entropy"],
                        "train_copy_rate": p["train_copy_rate"], "timings": p.get("timings", {})})
        return {"out": str(self.out), "settings": self.settings.to_dict(), "points": pts,
                "reused": self.reused, "ran": self.ran, "failed": {str(k): v for k, v in self.failed.items()},
                "skipped": self.skipped, "files": {k: str(v) for k, v in self.files.items()},
                "wall_seconds": self.wall_seconds, "memaudit_version": __version__}


def sweep(settings: SweepSettings, out: str | Path, workers: int = 1, show_progress: bool | None = None,
          deadline_s: float | None = None, rule=None, plots: bool = True,
          clock: Callable[[], float] = time.perf_counter, backend=None) -> SweepResult:
    """Run (or resume) a sweep and write its table, plots and index.html.

    workers: points trained in parallel processes (1: in this process). deadline_s: wall-clock
    budget; points not started by then are skipped, running ones stop training at it and are
    evaluated as they are (marked truncated; the next run resumes them). clock: what the deadline
    is measured with (seconds; the default is the wall clock) — tests pass a fake one so that
    where a deadline falls does not depend on the machine's speed. backend: run the points on it
    (memaudit.experiments.backends.RayBackend) instead of the local pool; this process still
    writes every report and table."""
    settings.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline_origin = clock()
    prepare_corpus(settings)
    reused = [n for n in settings.sizes if point_finished(out, settings, n)]
    jobs = [(settings, out, n) for n in settings.sizes if n not in reused]
    view = SweepView([(settings, reused)], enabled=show_progress)
    with view:
        failed, skipped = run_jobs(jobs, workers, view, deadline_origin, deadline_s, clock=clock, backend=backend)
    failed_n = {k[2]: v for k, v in failed.items()}
    skipped_n = [k[2] for k in skipped]
    ran = [n for _, _, n in jobs if n not in failed_n and n not in skipped_n]
    points = load_points(out, settings, include_truncated=True)
    table = build_table(points, settings, rule=rule)
    files = write_outputs(out, settings, points, table, plots=plots)
    return SweepResult(out=out, settings=settings, table=table, points=points, reused=reused, ran=ran,
                       failed=failed_n, skipped=skipped_n, files=files, wall_seconds=time.perf_counter() - started)


def write_outputs(out: Path, settings: SweepSettings, points: dict, table, plots: bool = True) -> dict[str, Path]:
    from ..report import json_bytes, write_files

    meta = {"memaudit_version": __version__, "settings": settings.to_dict(), "units": "nats; rates are fractions",
            "n_points": len(points)}
    files = {"sweep.parquet": table_bytes(table, meta)}
    summary = {"settings": settings.to_dict(),
               "points": [{"n_train": n, "recovery": p["recovery"]["verdict"], "scan": p.get("scan_verdict_current"),
                           "train_copy_rate": p["train_copy_rate"], "timings": p.get("timings", {})}
                          for n, p in sorted(points.items())]}
    files["sweep.json"] = json_bytes(summary)
    if plots and len(table):
        from ..report.sweep_page import index_html, sweep_figures

        figures = sweep_figures(table, title=f"{settings.data} · {settings.preset}")
        files.update(figures)
        files["index.html"] = index_html(f"memaudit sweep: {settings.data} · {settings.preset}", figures, table,
                                         settings.to_dict(), primary_t0=PRIMARY_T0).encode()
    return write_files(out, files)


def _gap_at(point: dict, t0: float) -> dict:
    gaps = point["recovery"]["gaps"]
    if not gaps:
        return {}
    return min(gaps, key=lambda g: abs(g["t0"] - t0))

