"""`memaudit demo`: the contrast between a memorizing and a generalizing model in a few minutes.

Trains (or reuses from the cache, $MEMAUDIT_CACHE) the two reference models of
`memaudit.reference` — the nano preset on the built-in synthetic Markov language, one on 32
sequences, one on 65,536 — scans both with the default rule and shows them side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXPECTED = {"memorizing": "memorizing", "generalizing": "generalizing"}


@dataclass
class DemoResult:
    checkpoints: dict[str, Path]
    results: dict                      # name → ScanResult
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.results[name].verdict == expected for name, expected in EXPECTED.items())

    def summary(self) -> dict:
        return {"ok": self.ok,
                "models": {name: {"expected": EXPECTED[name], "checkpoint": str(self.checkpoints[name]),
                                  **self.results[name].summary(include_timings=True),
                                  **({"report": str(self.reports[name])} if name in self.reports else {})}
                           for name in EXPECTED}}


def run_demo(samples: int = 256, steps: int | None = None, seed: int = 0, out: str | Path | None = None,
             device: str | None = None, root: str | Path | None = None, show_progress: bool | None = None,
             log=None) -> DemoResult:
    """Train or reuse the two reference models, scan both, optionally write both reports."""
    from .progress import console
    from .probe import scan
    from .reference import ensure_reference_models, is_cached
    from .report import write_report

    log = log or (lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    names = list(EXPECTED)
    missing = [n for n in names if not is_cached(n, root)]
    if missing:
        log(f"training reference model(s) {', '.join(missing)} (nano preset, synthetic data; a few minutes "
            "on a CPU, cached afterwards)")
    checkpoints = ensure_reference_models(names, root=root, show_progress=show_progress)
    results, reports = {}, {}
    for name in names:
        log(f"scanning the {name} reference model ({samples} samples)")
        results[name] = scan(checkpoints[name], samples=samples, steps=steps, seed=seed, device=device,
                             show_progress=show_progress)
        if out is not None:
            reports[name] = Path(out) / name
            write_report(results[name], reports[name])
    return DemoResult(checkpoints=checkpoints, results=results, reports=reports)


def contrast_table(demo: DemoResult):
    """A Rich table: one column per reference model."""
    from rich.table import Table

    from .report import fmt_ci

    table = Table(title="memaudit demo: the same probe on two models of known regime")
    table.add_column("")
    for name in EXPECTED:
        table.add_column(f"trained on {'32' if name == 'memorizing' else '65,536'} sequences", justify="right")
    res = [demo.results[n] for n in EXPECTED]
    rows = [
        ("verdict", [f"[bold]{r.verdict}[/] ({r.reason})" for r in res]),
        ("expected", list(EXPECTED.values())),
        ("samples used (adaptive)", [f"{r.n_samples}{' (stopped early)' if r.stopping.get('stopped_early') else ''}"
                                     for r in res]),
        (f"mean entropy (nats, t={res[0].settings.t_eval:g})",
         [f"{r.mean_entropy:.4f} {fmt_ci(r.mean_entropy_ci, '{:.4f}')}" for r in res]),
        ("… relative to ln V", [f"{r.entropy_ratio:.1%}" for r in res]),
        (f"tokens with H < τ={res[0].settings.tau:g}", [f"{r.low_entropy_fraction:.1%}" for r in res]),
        ("samples with mean H < τ", [f"{r.near_zero_sample_fraction:.1%}" for r in res]),
        ("duplicate samples", [f"{r.duplicate_rate:.1%}" for r in res]),
        ("identical sample pairs", [f"{r.colliding_pairs:,}" for r in res]),
        ("samples returning whole (t=0.5)", [f"{r.basin_return_rate:.1%}" for r in res]),
        ("fixed points", [f"{r.fixed_point_fraction:.1%}" for r in res]),
        ("tokens the dynamics changes", [f"{r.mean_fixed_point_distance:.1%}" for r in res]),
        ("scan time", [f"{r.timings.get('total_s', float('nan')):.1f} s" for r in res]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table
