"""Threads chosen by the work: 1 for small models, --threads / MEMAUDIT_THREADS override, the
environment's OMP_NUM_THREADS respected (issue 29; figures in docs/performance.md)."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from memaudit import threads
from memaudit.cli import app
from memaudit.errors import UsageError


@pytest.fixture()
def clean(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", threads.ENV):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    threads.enable(None)
    yield monkeypatch
    threads.enable(None)
    monkeypatch.setattr(threads, "_enabled", False)
    torch.set_num_threads(before)


def test_choice_follows_model_size_load_and_overrides(clean):
    # nano on a busy 2-core machine: one thread; idle: both cores (measured: 24,542 vs 14,878 tokens/s)
    assert threads.choose(787_872, cores=2, load=9.7, default=2) == 1
    assert threads.choose(787_872, cores=2, load=1.2, default=2) == 1
    assert threads.choose(787_872, cores=2, load=0.3, default=2) == 2
    assert threads.choose(787_872, cores=16, load=3.0, default=8) == 8   # never above torch's default
    assert threads.free_cores(cores=4, load=2.6) == 1 and threads.free_cores(cores=4, load=0.0) == 4
    assert threads.choose(85_000_000, cores=2, load=9.7, default=2) is None   # larger: torch's default
    clean.setenv("OMP_NUM_THREADS", "4")
    assert threads.choose(787_872) is None                   # the user's environment decides
    clean.setenv(threads.ENV, "3")
    assert threads.choose(787_872) == 3
    threads.enable(2)
    assert threads.choose(85_000_000) == 2
    clean.setenv(threads.ENV, "zero")
    threads.enable(None)
    with pytest.raises(UsageError):
        threads.choose(1)


def test_train_cli_applies_the_choice(clean, tmp_path):
    runner = CliRunner()
    torch.set_num_threads(2)
    args = ["train", "--steps", "1", "--n-train", "8", "--batch-size", "8", "--warmup", "1"]
    clean.setattr(threads, "free_cores", lambda cores=None, load=None: 1)   # a busy machine
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    assert torch.get_num_threads() == 1                      # nano on a busy machine: one thread
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--threads", "2"]).exit_code == 0
    assert torch.get_num_threads() == 2
