"""What the command line prints is what it means (issue 29): --version, inspect on stdout, help
text with its brackets, --tokenizer over a checkpoint's broken tokenizer, globs that match
nothing, a multi-checkpoint scan that saves nothing."""
from __future__ import annotations

import json
import re

import click
import pyarrow.parquet as pq
import pytest
from typer.main import get_command
from typer.testing import CliRunner

import memaudit
from memaudit.cli import app
from memaudit.train import TrainConfig, train

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_version():
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"memaudit {memaudit.__version__}\n"


def _help_texts(command: click.Command):
    yield command.help or ""
    for param in command.params:
        yield getattr(param, "help", None) or ""


@pytest.mark.parametrize("name", sorted(get_command(app).commands))
def test_help_renders_bracketed_text_literally(name):
    command = get_command(app).commands[name]
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    shown = flat(result.output)
    bracketed = [b for text in _help_texts(command) for b in re.findall(r"\S*\[[^\]\s]+\]\S*", text)]
    for b in bracketed:
        assert flat(b) in shown, f"{name} --help lost {b!r}"
    if name == "scan":
        assert "memaudit-dlm[ray]" in shown and "org/name[@revision]" in shown


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(TrainConfig(n_train=8, steps=2, batch_size=8, warmup=1), out, show_progress=False)
    return out


def test_inspect_writes_to_stdout(checkpoint):
    result = cli("inspect", checkpoint)
    assert result.exit_code == 0 and "family" in result.stdout and "memaudit" in result.stdout
    assert result.stderr == ""
    doc = json.loads(cli("inspect", checkpoint, "--json").stdout)
    assert doc["family"] == "memaudit"


def word_level_tokenizer(path, n):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({f"w{i}": i for i in range(n)}, unk_token="w0")).save(str(path))
    return path


@pytest.mark.parametrize("damage", ["missing", "broken", "wrong vocabulary"])
def test_tokenizer_option_wins_over_a_bad_declared_tokenizer(checkpoint, tmp_path, damage):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["tokenizer"] = {"file": "tokenizer.json"}
    (ckpt / "config.json").write_text(json.dumps(config))
    if damage == "broken":
        (ckpt / "tokenizer.json").write_text("{not json")
    elif damage == "wrong vocabulary":
        word_level_tokenizer(ckpt / "tokenizer.json", 7)
    failed = cli("inspect", ckpt)
    assert failed.exit_code == 4 and len(failed.stderr.strip().splitlines()) == 1, failed.output
    good = word_level_tokenizer(tmp_path / "good.json", 32)
    result = cli("inspect", ckpt, "--tokenizer", good, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["tokenizer"]["found_by"] == "--tokenizer"
    denoiser = memaudit.load(ckpt, tokenizer=str(good))
    assert denoiser.tokenizer is not None
    assert any("--tokenizer replaced it" in note for note in denoiser.provenance.get("notes", []))
    assert "_tokenizer_error" not in denoiser.provenance


def test_lone_glob_matching_nothing_writes_a_failed_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("scan", "runs/checkpoint-*", "--out", "audit", "--samples", "8")
    assert result.exit_code == 4, result.output
    table = pq.read_table(tmp_path / "audit" / "scans.parquet").to_pydict()
    assert table["checkpoint"] == ["runs/checkpoint-*"] and table["status"] == ["load_failed"]
    assert (tmp_path / "audit" / "index.html").is_file()


def test_multi_checkpoint_scan_without_out_warns(tmp_path):
    """Said after the scans (a run refused up front stays one line), only when reports were lost."""
    from test_load_limits import native

    a, b = native(tmp_path / "a"), native(tmp_path / "b")
    result = cli("scan", a, b, "--samples", "8", "--min-samples", "8", "--stored-search", "off")
    assert result.exit_code in (0, 1, 3), result.output
    assert "no --out" in flat(result.stderr) and "not saved" in flat(result.stderr)
    failed = cli("scan", tmp_path / "x", tmp_path / "y", "--samples", "8")
    assert failed.exit_code == 4 and "no --out" not in flat(failed.stderr)
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
