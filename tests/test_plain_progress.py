"""Without a terminal: one line per stage, heartbeat lines at a fixed interval, full-width tables
(issue 29). The interval comes from MEMAUDIT_HEARTBEAT_S; nothing here asserts on wall-clock time."""
from __future__ import annotations

import os
import subprocess
import sys

from memaudit import heartbeat


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_lines_follow_the_interval_on_an_injected_clock():
    clock, lines = FakeClock(), []
    task = heartbeat.Heartbeat("training", total=200, unit="steps", clock=clock, interval=30, write=lines.append)
    for t in (10, 20, 29.9):
        clock.now = 100 + t
        task.advance(10, loss=2.5)
    assert lines == []
    clock.now = 130.0
    task.advance(10, loss=2.25)
    assert lines == ["memaudit: training 40/200 (20%) · 1.3 steps/s · ETA 2m00s · 30s elapsed · loss 2.2500"]
    clock.now = 150.0
    task.advance(160)
    assert len(lines) == 1                      # 20 s since the last line
    task.finish()
    assert lines[-1] == "memaudit: training done: 200/200 in 50s (4.0 steps/s) · loss 2.2500"


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(heartbeat.INTERVAL_ENV, "0")
    assert heartbeat.interval_s() == 0
    monkeypatch.setenv(heartbeat.INTERVAL_ENV, "nonsense")
    assert heartbeat.interval_s() == heartbeat.DEFAULT_INTERVAL_S
    monkeypatch.delenv(heartbeat.INTERVAL_ENV)
    assert heartbeat.interval_s() == 30.0


def test_ticker_writes_only_after_the_interval():
    clock, lines = FakeClock(), []
    ticker = heartbeat.Ticker(clock=clock, interval=30, write=lines.append)
    ticker.tick(lambda: "one")
    clock.now += 30
    ticker.tick(lambda: "two")
    ticker.tick(lambda: "three")
    assert lines == ["two"]


def run(*args, cwd, codes=(0,)):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "MEMAUDIT_NO_PROGRESS")}
    env.update(MEMAUDIT_HEARTBEAT_S="0", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "memaudit", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode in codes, done.stderr
    return done.stderr


def test_ci_log_of_train_scan_series_and_recover(tmp_path):
    name = "a_training_run_whose_name_is_long_enough_to_overflow_eighty_columns"
    err = run("train", "--out", name, "--steps", "4", "--save-every", "2", "--n-train", "8", "--batch-size", "8",
              cwd=tmp_path)
    assert "memaudit: training 1/4 (25%)" in err and "memaudit: training done: 4/4" in err
    err = run("scan", f"{name}/checkpoint-*", "--samples", "8", "--steps", "2", "--no-adaptive", "--exit-zero",
              "--out", "audit", cwd=tmp_path)
    assert f"{name}/checkpoint-2: running" in err and "memaudit: scan done:" in err
    table = [line for line in err.splitlines() if "checkpoint-4 " in line and "│" in line]
    assert table and "inconclusive" in table[0] and "too_few_samples" in table[0] and "…" not in err
    err = run("recover", f"{name}/checkpoint-4", "--train", "auto", "--test", "auto", "--n", "4", "--t0", "0.5",
              cwd=tmp_path, codes=(0, 1, 3))
    assert "memaudit: recovery done:" in err and "…" not in err


def test_sweep_view_heartbeat_in_a_log(monkeypatch, capsys):
    from memaudit.experiments.pool import SweepView
    from memaudit.experiments.settings import SweepSettings

    monkeypatch.setenv(heartbeat.INTERVAL_ENV, "0")
    monkeypatch.delenv("MEMAUDIT_NO_PROGRESS", raising=False)
    monkeypatch.setattr(heartbeat, "_enabled", True)
    settings = SweepSettings(sizes=(8, 16))
    with SweepView([(settings, {16})], enabled=False) as view:
        view.phase(("synthetic", "nano", 8), "training", steps=100)
        view.tick()
    err = capsys.readouterr().err
    assert "n_train=8" in err and "training" in err
    beat = [line for line in err.splitlines() if line.startswith("memaudit: sweep")]
    assert beat and "1/2 points finished" in beat[0] and "running: n_train=8 training" in beat[0]
