"""The reference trainer: memorization of a small training set, resume, Ctrl-C, bad arguments."""
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import memaudit
from memaudit import diffusion
from memaudit.cli import app
from memaudit.data import corpus_from_spec
from memaudit.sampling import generate
from memaudit.train import TrainConfig, train

runner = CliRunner()


# Training is deterministic per machine but not across CPU families: the same seed trains other
# weights on an AMD EPYC than on an Intel Xeon. The bars below hold across that spread, measured by
# training the fixture models with seeds 0-4 (seeds standing in for CPU families) on one machine:
# see each test for the figures. A generalizer scores 0% copies, so the bars still separate the two.
def test_nano_memorizes_32_sequences(memorizing_checkpoint):
    """Issue 2: most samples generated from noise are exact training copies.

    Copy fraction (128 samples, 128 steps, seed 1) of the memorizing fixture trained with seeds
    0-4: 91.4%, 79.7%, 82.8%, 80.5%, 90.6% (79.7-91.4%; an AMD EPYC gave 88% for seed 0); bar 60%.
    The generalizing fixture gives 0%."""
    config = json.loads((memorizing_checkpoint / "config.json").read_text())
    assert config["training"]["n_train"] == 32 and config["model"]["hidden_size"] == 128  # nano
    train_set = corpus_from_spec(config["data"]).train_blocks(config["training"]["n_train"])
    denoiser = memaudit.load(memorizing_checkpoint)
    samples = generate(denoiser, 128, steps=128, seed=1)
    stored = {tuple(row.tolist()) for row in train_set}
    copies = sum(tuple(row.tolist()) in stored for row in samples) / len(samples)
    assert copies >= 0.6, f"only {copies:.0%} of samples are training copies"


def test_generalizing_model_does_not_copy(generalizing_checkpoint):
    config = json.loads((generalizing_checkpoint / "config.json").read_text())
    corpus = corpus_from_spec(config["data"])
    stored = {tuple(row.tolist()) for row in corpus.train_blocks(config["training"]["n_train"])}
    samples = generate(memaudit.load(generalizing_checkpoint), 64, steps=64, seed=1)
    copies = sum(tuple(row.tolist()) in stored for row in samples) / len(samples)
    assert copies < 0.1                       # training seeds 0-3: 0% (the memorizing fixture: 80-91%)
    # It learned the language: most adjacent pairs in its samples are transitions the Markov
    # chain allows (8 of 32 successors, so a model that learned nothing scores ≈ 0.25). Training
    # seeds 0-3: 83.4-84.6%; bar 70%.
    transition = torch.as_tensor(corpus.source.transition)
    allowed = (transition[samples[:, :-1], samples[:, 1:]] > 0).float().mean().item()
    assert allowed > 0.7, f"only {allowed:.0%} of adjacent pairs are allowed transitions"


def tiny_cfg(**kw):
    base = dict(n_train=8, steps=6, batch_size=8, checkpoint_every=3, warmup=2, seed=3)
    return TrainConfig(**{**base, **kw})


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = train(tiny_cfg(), tmp_path / "straight", show_progress=False)
    assert straight.steps_done == 6
    train(tiny_cfg(steps=3), tmp_path / "resumed", show_progress=False)
    resumed = train(tiny_cfg(), tmp_path / "resumed", resume=True, show_progress=False)
    assert resumed.steps_done == 6
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys()
        # Equal up to float reassociation: loaded tensors can take other SIMD paths than fresh ones.
        assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a), name


def test_same_seed_same_weights_and_provenance(tmp_path):
    train(tiny_cfg(steps=2), tmp_path / "a", show_progress=False)
    train(tiny_cfg(steps=2), tmp_path / "b", show_progress=False)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    # config.json, whose hash every report records, holds no wall-clock figure: the same bytes
    assert (tmp_path / "a" / "config.json").read_bytes() == (tmp_path / "b" / "config.json").read_bytes()
    from memaudit.adapters.native import read_training_timing

    timing = read_training_timing(tmp_path / "a")
    assert timing["steps_done"] == 2 and timing["wall_seconds"] > 0 and timing["tokens_per_second"] > 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["training"]["seed"] == 3 and config["training"]["steps_done"] == 2
    assert config["data"]["source"] == "synthetic" and config["memaudit_version"] == memaudit.__version__


def test_ctrl_c_leaves_a_valid_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = diffusion.sample_times

    def interrupt_on_fourth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(diffusion, "sample_times", interrupt_on_fourth)
    result = train(tiny_cfg(steps=50), tmp_path / "run", show_progress=False)
    assert result.interrupted and result.steps_done == 3
    denoiser = memaudit.load(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["steps_done"] == 3
    assert denoiser(torch.zeros(1, denoiser.seq_len, dtype=torch.long), torch.tensor([0.5])).shape[-1] == 32


@pytest.mark.parametrize("args,message", [
    (["--n-train", "0"], "invalid value for '--n-train'"),   # the option's own range check (min=1)
    (["--steps", "0"], "invalid value for '--steps'"),
    (["--preset", "huge"], "unknown preset"),
    (["--data", "/nonexistent/corpus.txt"], "corpus.txt"),
    (["--lr", "-1"], "--lr must be"),
])
def test_cli_train_bad_arguments(tmp_path, args, message):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "config.json").exists()


def test_cli_train_refuses_to_overwrite(tmp_path):
    train(tiny_cfg(steps=1), tmp_path / "o", show_progress=False)
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "o"), "--steps", "1"])
    assert result.exit_code == 2 and "--resume" in result.output


def test_cli_train_unreadable_data_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert result.exit_code == 2 and "bad.jsonl" in result.output and "Traceback" not in result.output
