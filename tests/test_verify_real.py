"""`memaudit verify` on reports of real scans of the trained reference models (issue 29: verify
passes on every report the suite writes; test_verify.py covers tampering on small reports).

Adaptive scans that stop early, fixed-sample scans with extra evaluation times and --n-train, and a
multi-checkpoint folder: each must reproduce from its own files, and a copy whose samples are cut
to a shorter look must not.
"""
from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from memaudit.cli import app

runner = CliRunner()


def scan(*args) -> None:
    result = runner.invoke(app, ["scan", *map(str, args)])
    assert result.exit_code in (0, 1, 3), result.output


def verify(folder) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", str(folder)])
    return result.exit_code, result.output


def test_real_reports_verify(memorizing_checkpoint, generalizing_checkpoint, tmp_path, single_thread):
    batch = tmp_path / "batch"
    scan(memorizing_checkpoint, generalizing_checkpoint, "--out", batch, "--samples", "128")
    fixed = tmp_path / "fixed"
    scan(generalizing_checkpoint, "--out", fixed, "--no-adaptive", "--samples", "32", "--t-profile", "0.01",
         "--n-train", "64")
    for folder in (batch, fixed):
        code, output = verify(folder)
        assert code == 0, output
    summaries = [json.loads(p.read_text()) for p in batch.glob("*/summary.json")]
    assert sorted(s["verdict"] for s in summaries) == ["generalizing", "memorizing"]
    # the memorizing scan stopped early: a claim of the full 128 samples does not reproduce
    memorizing = next(p.parent for p in batch.glob("*/summary.json")
                      if json.loads(p.read_text())["verdict"] == "memorizing")
    forged = tmp_path / "forged"
    shutil.copytree(memorizing, forged)
    doc = json.loads((forged / "summary.json").read_text())
    assert doc["n_samples"] < 128
    (forged / "summary.json").write_text(json.dumps({**doc, "mean_entropy": doc["mean_entropy"] * 2}))
    code, output = verify(forged)
    assert code == 1 and "mean_entropy" in output, output
