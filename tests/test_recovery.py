"""Token recovery: the per-sequence math, the verdict rule, `--train auto`, the memorizing
reference model, determinism and the CLI contract (exit codes, --json)."""
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import memaudit
from memaudit.cli import app
from memaudit.data import corpus_from_spec, load_corpus
from memaudit.recovery import RecoveryError, RecoverySettings, resolve_examples, sequence_metrics, steps_for
from memaudit.stats import bootstrap_gap_ci, bootstrap_mean_ci
from memaudit.train import TrainConfig, train
from memaudit.report import write_recovery_report

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------ hand-made cases
def test_rates_on_hand_made_sequences():
    x0 = np.array([[1, 2, 3, 4],
                   [5, 6, 7, 8],
                   [1, 1, 1, 1],
                   [9, 9, 9, 9]])
    x_t = np.array([[0, 2, 0, 4],     # positions 0, 2 corrupted
                    [5, 6, 7, 8],     # nothing corrupted
                    [1, 1, 1, 1],     # a redraw equal to the original is not a corruption
                    [0, 0, 0, 0]])    # everything corrupted
    x_f = np.array([[1, 2, 5, 4],     # 0 recovered, 2 failed, untouched stable
                    [5, 0, 7, 8],     # one untouched token broken
                    [1, 1, 1, 1],
                    [9, 9, 9, 9]])    # all recovered
    h = np.array([[0.1, 0.2, 0.3, 0.4],
                  [1.0, 2.0, 3.0, 4.0],
                  [0.0, 0.0, 0.0, 0.0],
                  [0.5, 0.5, 0.5, 0.5]])
    m = sequence_metrics(x0, x_t, x_f, h)
    assert m["n_corrupted"].tolist() == [2, 0, 0, 4]
    np.testing.assert_allclose(m["recovery_rate"][[0, 3]], [0.5, 1.0])
    assert math.isnan(m["recovery_rate"][1]) and math.isnan(m["recovery_rate"][2])   # nothing corrupted
    np.testing.assert_allclose(m["unstable_rate"][:3], [0.0, 0.25, 0.0])
    assert math.isnan(m["unstable_rate"][3])                                          # nothing untouched
    assert m["exact_match"].tolist() == [False, False, True, True]
    # final-state entropy per category (NaN when the category is empty)
    assert m["entropy_recovered"][0] == pytest.approx(0.1) and m["entropy_failed"][0] == pytest.approx(0.3)
    assert m["entropy_stable"][0] == pytest.approx(0.3)                               # mean of 0.2, 0.4
    assert m["entropy_unstable"][1] == pytest.approx(2.0)
    assert math.isnan(m["entropy_recovered"][1]) and math.isnan(m["entropy_unstable"][0])


def test_shape_mismatch_is_an_error():
    with pytest.raises(RecoveryError):
        sequence_metrics(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)))


def test_bootstrap_skips_nan_and_gap_ci():
    values = np.array([1.0, np.nan, 1.0, np.nan])
    assert bootstrap_mean_ci(values, 200, 0.95, seed=1) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_mean_ci(np.array([np.nan]), 200, 0.95, seed=1))
    lo, hi = bootstrap_gap_ci(np.ones(50), np.r_[np.zeros(50), np.nan], 500, 0.95, seed=2)
    assert lo == hi == 1.0
    lo, hi = bootstrap_gap_ci(np.linspace(0, 1, 40), np.linspace(0, 1, 40), 500, 0.95, seed=3)
    assert lo < 0 < hi


def _gap(t0, train, test, half_width):
    return {"t0": t0, "train": train, "test": test, "gap": train - test,
            "gap_ci": [train - test - half_width, train - test + half_width]}


def _summ(rate, hi):
    return {"recovery_rate": rate, "recovery_rate_ci": [max(0.0, rate - 0.01), hi]}


@pytest.mark.parametrize("gaps,summaries,verdict,reason", [
    ([_gap(0.25, 1.0, 0.1, 0.05), _gap(0.5, 0.9, 0.05, 0.05)], [_summ(1.0, 1.0)], "memorizing",
     "train_recovered_test_not"),
    ([_gap(0.25, 0.45, 0.44, 0.04), _gap(0.5, 0.30, 0.31, 0.05)], [_summ(0.45, 0.5)], "generalizing",
     "train_equals_test"),
    ([_gap(0.25, 0.03, 0.03, 0.02)], [_summ(0.03, 0.05)], "inconclusive", "low_recovery"),
    # few examples: a wide CI above the floor does not make near-chance recovery "generalizing"
    ([_gap(0.5, 0.065, 0.026, 0.06)], [_summ(0.065, 0.115), _summ(0.026, 0.031)], "inconclusive", "low_recovery"),
    ([_gap(0.25, 0.6, 0.4, 0.05)], [_summ(0.6, 0.65)], "inconclusive", "transition"),
    ([_gap(0.25, 0.4, 0.38, 0.2)], [_summ(0.4, 0.5)], "inconclusive", "ci_too_wide"),
])
def test_verdict_rule(gaps, summaries, verdict, reason):
    d = RecoverySettings().rule.decide(summaries, gaps)
    assert (d.verdict, d.reason) == (verdict, reason)


def test_verdict_ignores_t0_with_too_few_corrupted_tokens():
    """At t0 = 0.05 a 32-token sequence has ~1.5 corrupted tokens: too noisy to compare."""
    gaps = [_gap(0.05, 0.41, 0.33, 0.08), _gap(0.25, 0.25, 0.27, 0.03)]
    summaries = [{"t0": 0.05, "mean_corrupted_tokens": 1.5, **_summ(0.4, 0.45)},
                 {"t0": 0.25, "mean_corrupted_tokens": 7.8, **_summ(0.25, 0.3)}]
    d = RecoverySettings().rule.decide(summaries, gaps)
    assert (d.verdict, d.reason) == ("generalizing", "train_equals_test")
    assert RecoverySettings(min_corrupted_tokens=1).rule.decide(summaries, gaps).reason == "ci_too_wide"


def test_steps_proportional_to_t0():
    assert [steps_for(t, 100) for t in (0.05, 0.1, 0.25, 0.5)] == [5, 10, 25, 50]
    assert steps_for(0.001, 100) == 1


# ------------------------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def memorizer(memorizing_checkpoint):
    return memaudit.load(memorizing_checkpoint)


def test_train_auto_rebuilds_the_training_subset(memorizer, memorizing_checkpoint):
    config = json.loads((memorizing_checkpoint / "config.json").read_text())
    n_train = config["training"]["n_train"]
    corpus = load_corpus(config["data"]["source"], seq_len=config["data"]["seq_len"], seed=config["data"]["seed"])
    tokens, desc = resolve_examples("auto", memorizer, "train", n=10_000)
    assert torch.equal(tokens, corpus.train_blocks(n_train))          # all of it, and only it
    assert desc["n_train"] == n_train
    first8, _ = resolve_examples("auto", memorizer, "train", n=8)
    assert torch.equal(first8, corpus.train_blocks(8))                 # nested prefix
    test, _ = resolve_examples("auto", memorizer, "test", n=64)
    stored = {tuple(r) for r in tokens.tolist()}
    assert test.shape == (64, memorizer.seq_len) and not any(tuple(r) in stored for r in test.tolist())


def test_train_auto_on_a_text_checkpoint(tmp_path):
    """Text corpora: the checkpoint's own tokenizer re-encodes the corpus to the same blocks."""
    ckpt = tmp_path / "docs"
    train(TrainConfig(data="docs", n_train=6, steps=1, batch_size=2, warmup=1), ckpt, show_progress=False)
    denoiser = memaudit.load(ckpt)
    tokens, _ = resolve_examples("auto", denoiser, "train", n=100)
    config = json.loads((ckpt / "config.json").read_text())
    assert torch.equal(tokens, corpus_from_spec(config["data"]).train_blocks(6))
    # a text file is tokenized with the checkpoint's tokenizer and cut into model-length blocks
    text = tmp_path / "held.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(40)))
    blocks, desc = resolve_examples(str(text), denoiser, "test", n=5)
    assert blocks.shape == (5, denoiser.seq_len) and desc["source"] == "file"


def test_memorizing_model_recovers_train_far_above_test(memorizer):
    result = memaudit.recover(memorizer, t0=(0.25,), n=48, seed=0)
    train_rate, test_rate = result.recovery("train", 0.25), result.recovery("test", 0.25)
    assert train_rate >= 0.9 and test_rate <= 0.5 and train_rate - test_rate >= 0.4, (train_rate, test_rate)
    assert result.verdict == "memorizing"
    s = result.summary_for("train", 0.25)
    assert s["entropy_recovered"] < s["entropy_failed"] or math.isnan(s["entropy_failed"])
    frame = result.to_pandas()
    assert len(frame) == 32 + 48                   # train has only its n_train = 32 examples
    assert set(frame["split"]) == {"train", "test"}


def test_same_seed_same_report(tmp_path, memorizer):
    a = memaudit.recover(memorizer, t0=(0.1, 0.5), n=8, seed=7)
    b = memaudit.recover(memorizer, t0=(0.1, 0.5), n=8, seed=7)
    write_recovery_report(a, tmp_path / "a")
    write_recovery_report(b, tmp_path / "b")
    for name in ("recovery.parquet", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    from memaudit.report import read_metadata

    meta = read_metadata(tmp_path / "a" / "recovery.parquet")
    assert meta["settings"]["seed"] == 7 and meta["memaudit_version"] == memaudit.__version__
    assert meta["settings"]["steps"]["0.1"] == 10


# -------------------------------------------------------------------------------------------- CLI
def test_cli_exit_code_and_json(memorizing_checkpoint, tmp_path):
    r = runner.invoke(app, ["recover", str(memorizing_checkpoint), "--t0", "0.25", "--n", "24", "--json",
                            "--out", str(tmp_path / "rep"), "--device", "cpu"])
    assert r.exit_code == 1, r.output                     # memorizing: the gate fails
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "memorizing" and doc["gaps"][0]["t0"] == 0.25
    assert (tmp_path / "rep" / "recovery.parquet").exists() and (tmp_path / "rep" / "summary.json").exists()
    r = runner.invoke(app, ["recover", str(memorizing_checkpoint), "--t0", "0.25", "--n", "8", "--exit-zero",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,code", [
    (["--t0", "1.5"], 2),
    (["--t0", "abc"], 2),
    (["--n", "0"], 2),
    (["--train", "missing.npy"], 2),
    (["--train", "notes.txt"], 2),            # synthetic checkpoint: no tokenizer for text
])
def test_cli_usage_errors(memorizing_checkpoint, tmp_path, args, code):
    if "notes.txt" in args:
        (tmp_path / "notes.txt").write_text("some text\n\nmore text")
        args = ["--train", str(tmp_path / "notes.txt")]
    r = runner.invoke(app, ["recover", str(memorizing_checkpoint), *args, "--device", "cpu"])
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output


def test_cli_missing_checkpoint_is_a_load_error(tmp_path):
    r = runner.invoke(app, ["recover", str(tmp_path / "nope")])
    assert r.exit_code == 4, r.output


def test_npy_token_ids(memorizer, tmp_path):
    ids = load_corpus("synthetic").test_blocks(6).numpy()
    np.save(tmp_path / "ids.npy", ids)
    tokens, desc = resolve_examples(str(tmp_path / "ids.npy"), memorizer, "test", n=10)
    assert torch.equal(tokens, torch.from_numpy(ids)) and desc["source"] == "npy"
    np.save(tmp_path / "bad.npy", ids[:, :5])
    with pytest.raises(RecoveryError, match="length"):
        resolve_examples(str(tmp_path / "bad.npy"), memorizer, "test", n=10)
