"""Scan reports: Parquet schema and round trip, the provenance blob, byte-identical reruns,
all-or-nothing writes."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memaudit import report
from memaudit.cli import app
from memaudit.probe import scan
from test_scan import tiny_checkpoint
from memaudit.report import write_report

FILES = ("samples.parquet", "tokens.parquet", "summary.json")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel({f"w{i}": i for i in range(16)}, unk_token="w0"))
    return tiny_checkpoint(tmp_path_factory.mktemp("report") / "ckpt", tokenizer=tok)


@pytest.fixture(scope="module")
def result(ckpt):
    return scan(ckpt, samples=20, steps=3, seed=1, batch_size=8, t_profile=[0.1], show_progress=False,
                bootstrap_resamples=100)


def test_samples_parquet_round_trip(result, tmp_path):
    write_report(result, tmp_path)
    table = pq.read_table(tmp_path / "samples.parquet")
    schema = table.schema
    assert schema.field("sample_id").type == pa.int32()
    assert schema.field("token_ids").type == pa.list_(pa.int32())
    assert schema.field("text").type == pa.string()
    for name in ("mean_entropy", "low_entropy_fraction", "mean_top1_prob"):
        assert schema.field(name).type == pa.float32()
    assert schema.field("is_duplicate").type == pa.bool_() and schema.field("is_fixed_point").type == pa.bool_()
    df = table.to_pandas()
    assert len(df) == result.n_samples
    assert np.array_equal(np.stack(df.token_ids.to_numpy()), result.tokens)
    assert np.array_equal(df.mean_entropy.to_numpy(), result.sample_mean_entropy)
    assert df.text.tolist() == result.texts and all(isinstance(t, str) for t in df.text)
    assert df.is_duplicate.tolist() == result.is_duplicate.tolist()
    assert df.is_fixed_point.tolist() == result.is_fixed_point.tolist()
    dup = df.duplicate_of.tolist()
    assert all((d is None or d != d) if not is_dup else d >= 0 for d, is_dup in zip(dup, df.is_duplicate))


def test_tokens_parquet_round_trip(result, tmp_path):
    write_report(result, tmp_path)
    df = pq.read_table(tmp_path / "tokens.parquet").to_pandas()
    n_t, n, length = result.entropy.shape
    assert n_t == 2 and len(df) == n_t * n * length
    assert list(df.columns) == ["sample_id", "position", "token_id", "t_eval", "entropy", "top1_prob"]
    assert df.entropy.dtype == np.float32 and df.top1_prob.dtype == np.float32
    first = df[df.t_eval == result.t_values[0]]
    assert np.array_equal(first.entropy.to_numpy().reshape(n, length), result.entropy[0])
    assert np.array_equal(first.token_id.to_numpy().reshape(n, length), result.tokens)
    assert sorted(df.t_eval.unique()) == sorted(result.t_values)


def test_no_t_eval_column_without_profile(ckpt, tmp_path):
    r = scan(ckpt, samples=4, steps=1, show_progress=False, bootstrap_resamples=20)
    write_report(r, tmp_path)
    assert pq.read_schema(tmp_path / "tokens.parquet").names == ["sample_id", "position", "token_id", "entropy",
                                                                  "top1_prob"]
    assert pq.read_table(tmp_path / "samples.parquet").column("text").null_count == 0


def test_provenance_blob(result, tmp_path, ckpt):
    write_report(result, tmp_path)
    for name in ("samples.parquet", "tokens.parquet"):
        meta = report.read_metadata(tmp_path / name)
        assert meta["units"] == "nats"
        assert meta["verdict"] == result.verdict and meta["reason"] == result.reason
        for key in ("memaudit_version", "torch_version", "python_version"):
            assert meta[key]
        model = meta["model"]
        assert model["checkpoint"] == str(ckpt.resolve()) and model["family"] == "memaudit"
        assert model["weights"] in ("ema", "raw")
        assert len(model["files"]["config.json"]) == 64
        sampler = meta["sampler"]
        assert sampler["steps"] == 3 and sampler["final"] == "greedy"
        assert "batch_size" not in sampler and "batch_size" not in meta["settings"]   # never changes a result
        assert meta["stopping"]["samples_used"] == result.n_samples
        assert sampler["posterior_dtype"] == "float64"
        assert meta["seeds"]["seed"] == 1
        assert meta["t_eval"] == result.settings.t_eval and meta["tau"] == result.settings.tau
        assert {"name", "status", "source", "sha256"} <= set(meta["rule"])
        blob = json.dumps(meta)
        assert str(tmp_path) not in blob          # no report path in the provenance
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == result.verdict and summary["provenance"]["units"] == "nats"
    assert "timings" not in summary


def test_same_seed_gives_byte_identical_reports(ckpt, tmp_path):
    kwargs = dict(samples=20, steps=3, seed=5, batch_size=8, t_profile=[0.05], show_progress=False,
                  bootstrap_resamples=100)
    write_report(scan(ckpt, **kwargs), tmp_path / "a")
    write_report(scan(ckpt, **kwargs), tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert set(FILES) <= set(names) and names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    write_report(scan(ckpt, **{**kwargs, "seed": 6}), tmp_path / "c")
    assert (tmp_path / "a" / "samples.parquet").read_bytes() != (tmp_path / "c" / "samples.parquet").read_bytes()


def test_cli_reruns_are_byte_identical(ckpt, tmp_path):
    runner = CliRunner()
    for sub in ("x", "y"):
        res = runner.invoke(app, ["scan", str(ckpt), "--samples", "12", "--steps", "2", "--seed", "3",
                                  "--out", str(tmp_path / sub), "--exit-zero"])
        assert res.exit_code == 0, res.stderr
    for name in FILES:
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes(), name


def test_failed_write_leaves_nothing(result, tmp_path, monkeypatch):
    def boom(r):
        raise RuntimeError("disk full")

    out = tmp_path / "out"
    monkeypatch.setitem(report.REPORT_FILES, "tokens.parquet", boom)
    with pytest.raises(RuntimeError):
        write_report(result, out)
    assert not out.exists() or list(out.iterdir()) == []


def test_failed_rewrite_keeps_the_old_report(result, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_report(result, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(r):
        raise RuntimeError("disk full")

    monkeypatch.setitem(report.REPORT_FILES, "summary.json", boom)
    with pytest.raises(RuntimeError):
        write_report(result, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # no temporaries left either


def test_write_files_is_composable(result, tmp_path):
    written = report.write_files(tmp_path, {"extra.json": report.json_bytes({"a": 1}),
                                            "samples.parquet": report.parquet_bytes(report.samples_table(result))})
    assert set(written) == {"extra.json", "samples.parquet"}
    assert json.loads((tmp_path / "extra.json").read_text()) == {"a": 1}
    only = report.write_report(result, tmp_path / "only", names=["summary.json"])
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["summary.json"] and set(only) == {"summary.json"}
