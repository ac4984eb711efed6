"""Adaptive sampling (memaudit.verdict.sequential) and batch-size independence of scan results."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from memaudit.probe import ScanSettings, scan
from memaudit.verdict import load_rule, sequential

CALIBRATION = Path(__file__).resolve().parent.parent / "memaudit" / "calibration"
TABLES = [CALIBRATION / "calibration_table.parquet", CALIBRATION / "validation" / "validation_table.parquet"]


def test_looks_double_from_the_floor_to_the_maximum():
    assert sequential.looks(32, 256) == [32, 64, 128, 256]
    assert sequential.looks(32, 200) == [32, 64, 128, 200]
    assert sequential.looks(64, 64) == [64]
    assert sequential.looks(300, 256) == [256]


def stored_points():
    for table in TABLES:
        for row in pq.read_table(table).to_pylist():
            yield f"{table.parent.name}:{row['data']}:{row['n_train']}:{row['steps']}", row


POINTS = list(stored_points())


@pytest.mark.parametrize("name,row", POINTS, ids=[p[0] for p in POINTS])
def test_adaptive_verdict_never_contradicts_the_full_scan(name, row):
    """On every calibration and validation point (per-sample values in the checked-in tables, in
    the order they were drawn): the adaptive decision equals the full-sample decision wherever
    the latter is definite, and is never the opposite definite verdict."""
    from memaudit.experiments.validation import gate_wrong, replay_adaptive

    full, adaptive, used = replay_adaptive(row, load_rule())
    n = len(row["duplicate_of"])
    if full.verdict in ("memorizing", "generalizing"):
        assert adaptive.verdict == full.verdict, (name, used, adaptive.reason, full.reason)
    else:
        assert adaptive.verdict not in ("memorizing", "generalizing") or used < n
        assert adaptive.verdict == full.verdict or used < n
    assert {adaptive.verdict, full.verdict} != {"memorizing", "generalizing"}
    # and never a wrong gate verdict: no stored-set model (by recovery) passed as generalizing on
    # its first samples (the position test's power grows with the samples, so a 'generalizing' it
    # hints against does not stop the scan)
    assert not gate_wrong(row["label"], row["recovery_verdict"], adaptive.verdict), (name, used, adaptive.reason)


def test_adaptive_scan_stops_early_on_a_memorizer_with_the_full_scans_first_samples(memorizing_checkpoint):
    full = scan(memorizing_checkpoint, samples=128, steps=16, seed=0, show_progress=False, adaptive=False)
    quick = scan(memorizing_checkpoint, samples=128, steps=16, seed=0, show_progress=False)
    used = quick.stopping["samples_used"]
    assert quick.verdict == full.verdict == "memorizing"
    assert quick.stopping["stopped_early"] and used < 128 and quick.n_samples == used
    assert (quick.tokens == full.tokens[:used]).all()              # the same samples, drawn first
    assert quick.stopping["looks"] == [32, 64, 128] and quick.summary()["stopping"] == quick.stopping
    assert full.stopping == {"adaptive": False, "looks": [128], "samples_used": 128, "stopped_early": False,
                             "reason": "fixed sample count (128; --no-adaptive)"}


def test_reports_do_not_depend_on_the_batch_size(tiny_ckpt):
    from memaudit.report import render_report

    files = []
    for batch_size in (1, 7, 64):
        r = scan(tiny_ckpt, settings=ScanSettings(samples=20, steps=3, seed=2, batch_size=batch_size,
                                                  t_profile=(0.1,), bootstrap_resamples=50), show_progress=False)
        assert r.timings["batch_size"] == batch_size
        files.append(render_report(r))
    assert files[0].keys() == files[1].keys() == files[2].keys()
    for name in files[0]:
        assert files[0][name] == files[1][name] == files[2][name], name
    auto = scan(tiny_ckpt, settings=ScanSettings(samples=20, steps=3, seed=2, t_profile=(0.1,),
                                                 bootstrap_resamples=50), show_progress=False)
    assert render_report(auto) == files[0] and auto.timings["batch_size"] == 20   # all 20 fit at once


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from test_scan import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("adaptive") / "m")


# ------------------------------------------------------------------------------ memory budget
def test_sizes_and_batch_sizes_parse():
    from memaudit.budget import BudgetError, parse_batch_size, parse_size

    assert parse_size("4GiB") == 4 * 2**30 and parse_size("500MB") == 500 * 10**6 and parse_size("123") == 123
    assert parse_size(None) is None and parse_batch_size("auto") is None and parse_batch_size("7") == 7
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(BudgetError):
            parse_size(bad)
    for bad in ("0", "x", "-2"):
        with pytest.raises(BudgetError):
            parse_batch_size(bad)


def test_batch_plan_fits_the_budget_and_refuses_what_cannot(tiny_ckpt):
    import memaudit
    from memaudit.budget import BudgetError, bytes_per_sequence, plan_batch

    den = memaudit.load(tiny_ckpt)
    per = bytes_per_sequence(den.vocab_size, den.seq_len, 32, 2)
    assert plan_batch(den, None, 10 * per + 1).batch_size == 10
    assert plan_batch(den, None, 10 * per + 1, work=4).batch_size == 4
    assert plan_batch(den, 10, 10 * per).batch_size == 10
    with pytest.raises(BudgetError, match=r"--batch-size 11 needs about .* use --batch-size auto or ≤ 10"):
        plan_batch(den, 11, 10 * per + 1)
    with pytest.raises(BudgetError, match="one sequence needs about"):
        plan_batch(den, None, per - 1)
    # the estimate grows with V × L (the [B, L, V] float32 tensors of a step dominate)
    assert bytes_per_sequence(30522, 128, 768, 12) > 60 * 2**20 > bytes_per_sequence(32, 32, 128, 4)


@pytest.mark.parametrize("extra,message", [(["--batch-size", "64", "--max-memory", "20KB"], "--batch-size 64 needs"),
                                            (["--max-memory", "1KB"], "one sequence needs"),
                                            (["--max-memory", "lots"], "--max-memory"),
                                            (["--batch-size", "many"], "--batch-size")])
def test_scan_refuses_a_batch_that_cannot_fit_up_front(tiny_ckpt, tmp_path, extra, message):
    from typer.testing import CliRunner

    from memaudit.cli import app

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["scan", str(tiny_ckpt), "--samples", "8", "--steps", "1", "--out", str(out),
                                      *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_recovery_reports_do_not_depend_on_the_batch_size(tiny_ckpt, tmp_path):
    import numpy as np

    from memaudit.recovery import RecoverySettings, recover
    from memaudit.report import write_recovery_report

    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 16, size=(9, 12)), rng.integers(0, 16, size=(9, 12))
    pages = []
    for batch_size in (2, 64):
        r = recover(tiny_ckpt, train, test, settings=RecoverySettings(t0=(0.25, 0.5), n=9, steps_per_unit=12,
                                                                      batch_size=batch_size, bootstrap_resamples=50),
                    pattern="prefix:0.5", show_progress=False)
        paths = write_recovery_report(r, tmp_path / f"b{batch_size}")
        pages.append({name: Path(p).read_bytes() for name, p in paths.items()})
    assert pages[0].keys() == pages[1].keys() and pages[0] == pages[1]


def test_automatic_batch_on_a_cpu_stops_at_the_tokens_a_matmul_needs(tiny_ckpt):
    import memaudit
    from memaudit.budget import CPU_TOKENS_PER_CALL, plan_batch

    den = memaudit.load(tiny_ckpt)                       # L = 12
    assert plan_batch(den, None, 2**40).batch_size == min(256, CPU_TOKENS_PER_CALL // 12)
