"""`memaudit train --save-every N [--keep K]`: a checkpoint series a trend scan reads with no manual
step (issue 29)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

import memaudit
from memaudit.cli import app
from memaudit.train import TrainConfig, series_checkpoints, train

runner = CliRunner()
TINY = ["--n-train", "8", "--batch-size", "8", "--warmup", "2", "--seed", "3", "--device", "cpu"]


def test_save_every_writes_complete_resumable_checkpoints(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(n_train=8, steps=5, batch_size=8, warmup=2, seed=3, save_every=2, keep=2), run,
          show_progress=False)
    series = series_checkpoints(run)
    assert [p.name for p in series] == ["checkpoint-4", "checkpoint-5"]   # 2 dropped by --keep 2; the end kept
    for folder in series:
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "ema.safetensors", "trainer_state.pt"} <= names
        assert names == {p.name for p in run.iterdir() if p.is_file()}   # the tokenizer too, when there is one
        config = json.loads((folder / "config.json").read_text())
        assert config["training"]["steps_done"] == int(folder.name.split("-")[1])
        assert memaudit.load(folder).vocab_size == 32
    assert not list(run.glob(".checkpoint-*"))                            # no staging folder left
    # a series folder resumes like the run itself: 4 → 5 steps gives the run's final weights
    more = train(TrainConfig(n_train=8, steps=5, batch_size=8, warmup=2, seed=3), series[0], resume=True,
                 show_progress=False)
    assert more.steps_done == 5


def test_train_series_then_trend_scan_with_no_manual_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--out", "run", "--steps", "4", "--save-every", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert [p.name for p in series_checkpoints(tmp_path / "run")] == ["checkpoint-2", "checkpoint-4"]
    result = runner.invoke(app, ["scan", "run/checkpoint-*", "--out", "audit", "--samples", "8", "--steps", "2",
                                 "--no-adaptive", "--exit-zero"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "audit" / "scans.parquet").to_pydict()
    assert table["step"] == [2, 4] and table["status"] == ["scanned", "scanned"]
    assert (tmp_path / "audit" / "index.html").is_file()
    for slug in table["slug"]:
        assert runner.invoke(app, ["verify", f"audit/{slug}"]).exit_code == 0
    result = runner.invoke(app, ["verify", "audit"])                   # the whole folder
    assert result.exit_code == 0 and "2 of 2 checkpoints" in result.stderr, result.output
    import shutil

    shutil.copy(tmp_path / "audit" / table["slug"][0] / "tokens.parquet",
                tmp_path / "audit" / table["slug"][1] / "tokens.parquet")
    result = runner.invoke(app, ["verify", "audit"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and table["slug"][1] in result.stderr


def test_keep_needs_save_every(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--steps", "2", "--keep", "1", *TINY])
    assert result.exit_code == 2 and "--keep needs --save-every" in result.stderr
