"""`memaudit verify`: a report checked from its own files, without the model (issue 29)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memaudit.cli import app
from memaudit.provenance import SCHEMA_VERSION
from memaudit.report.tables import METADATA_KEY, parquet_bytes
from memaudit.verify import verify_report
from report_fixtures import fake_scan_dir, tiny_scan_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    return {"fake": fake_scan_dir(root / "fake"), "other": fake_scan_dir(root / "other", memorizing_share=0.9),
            "tiny": tiny_scan_dir(root / "tiny")}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


def write_summary(d: Path, doc: dict) -> None:
    (d / "summary.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def rehash(d: Path) -> None:
    """Make summary.json's report_files agree with the Parquet files (a careful tamperer)."""
    doc = summary(d)
    for name in doc["report_files"]:
        data = (d / name).read_bytes()
        doc["report_files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_summary(d, doc)


def rewrite_table(path: Path, table: pa.Table, blob: dict | None = None) -> None:
    meta = table.schema.metadata
    if blob is not None:
        meta = {**meta, METADATA_KEY: json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()}
    path.write_bytes(parquet_bytes(table.replace_schema_metadata(meta)))


def cli(*args):
    return runner.invoke(app, ["verify", *map(str, args)])


def assert_fails(d: Path, *needles: str):
    result = cli(d)
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output, err
    for needle in needles:
        assert needle in err, err
    return err


def test_every_report_carries_its_schema_version(reports):
    doc = summary(reports["tiny"])
    assert doc["schema_version"] == SCHEMA_VERSION == doc["provenance"]["schema_version"]
    for name in ("samples.parquet", "tokens.parquet"):
        blob = json.loads(pq.read_schema(reports["tiny"] / name).metadata[METADATA_KEY])
        assert blob["schema_version"] == SCHEMA_VERSION
        assert doc["report_files"][name]["sha256"] == hashlib.sha256((reports["tiny"] / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["fake", "other", "tiny"])
def test_good_reports_verify(reports, name):
    result = verify_report(reports[name])
    assert result.ok, result.message
    out = cli(reports[name])
    assert out.exit_code == 0, out.output
    assert "verified" in out.stderr and out.stdout == ""
    doc = json.loads(cli(reports[name], "--json").stdout)
    assert doc["ok"] is True and "statistics and verdict" in doc["checks"][-1]


def test_changed_verdict_fails(reports, tmp_path):
    d = copy(reports["fake"], tmp_path / "r")
    doc = summary(d)
    doc["verdict"] = "generalizing"
    write_summary(d, doc)
    assert_fails(d, "verdict")


def test_changed_verdict_everywhere_fails_on_recomputation(reports, tmp_path):
    """verdict, reason changed consistently in summary.json and both metadata blobs, hashes redone."""
    d = copy(reports["fake"], tmp_path / "r")
    doc = summary(d)
    for target in (doc, doc["provenance"]):
        target["verdict"], target["reason"] = "generalizing", "finite_entropy"
    write_summary(d, doc)
    for name in ("samples.parquet", "tokens.parquet"):
        rewrite_table(d / name, pq.read_table(d / name), doc["provenance"])
    rehash(d)
    assert_fails(d, "summary.json: verdict", "recomputed 'inconclusive'")


def test_dropped_row_fails(reports, tmp_path):
    d = copy(reports["fake"], tmp_path / "r")
    table = pq.read_table(d / "samples.parquet")
    rewrite_table(d / "samples.parquet", table.slice(0, table.num_rows - 1))
    assert_fails(d, "samples.parquet", "summary.json records")
    rehash(d)                                  # even with the hashes redone
    assert_fails(d, "samples.parquet", "rows")


def test_replaced_parquet_fails(reports, tmp_path):
    d = copy(reports["fake"], tmp_path / "r")
    shutil.copy(reports["other"] / "tokens.parquet", d / "tokens.parquet")
    assert_fails(d, "tokens.parquet")
    rehash(d)
    assert_fails(d, "tokens.parquet")


def test_edited_entropy_fails_even_when_rehashed(reports, tmp_path):
    d = copy(reports["fake"], tmp_path / "r")
    table = pq.read_table(d / "tokens.parquet")
    entropy = table.column("entropy").to_numpy().copy()
    entropy[:200] = 5.0
    table = table.set_column(table.schema.get_field_index("entropy"), table.schema.field("entropy"),
                             pa.array(entropy))
    rewrite_table(d / "tokens.parquet", table)
    rehash(d)
    assert_fails(d, "mean_entropy")


def test_swapped_rule_fails(reports, tmp_path):
    from memaudit.verdict import load_rule

    shipped = load_rule(None).describe()
    d = copy(reports["fake"], tmp_path / "r")
    doc = summary(d)
    doc["rule"] = shipped
    write_summary(d, doc)
    assert_fails(d, "rule")
    # swapped everywhere: the recorded thresholds decide the verdict, which no longer reproduces
    doc["provenance"]["rule"] = shipped
    write_summary(d, doc)
    for name in ("samples.parquet", "tokens.parquet"):
        rewrite_table(d / name, pq.read_table(d / name), doc["provenance"])
    rehash(d)
    assert_fails(d)
    # a rule whose thresholds were edited under a shipped rule's sha256
    d2 = copy(reports["fake"], tmp_path / "r2")
    doc = summary(d2)
    edited = json.loads(json.dumps(shipped))
    edited["thresholds"]["memorizing"]["mean_entropy_max"] = 0.01
    doc["rule"] = doc["provenance"]["rule"] = edited
    write_summary(d2, doc)
    for name in ("samples.parquet", "tokens.parquet"):
        rewrite_table(d2 / name, pq.read_table(d2 / name), doc["provenance"])
    rehash(d2)
    assert_fails(d2, "rule differs from the rule file")


def test_rule_option_requires_that_rule(reports, tmp_path):
    from memaudit.verdict.scan import DEFAULT_RULE

    result = cli(reports["fake"], "--rule", DEFAULT_RULE)
    assert result.exit_code == 1 and "rule sha256 is not that of" in result.stderr, result.output


def test_missing_file_and_old_report(reports, tmp_path):
    d = copy(reports["fake"], tmp_path / "r")
    (d / "tokens.parquet").unlink()
    assert_fails(d, "tokens.parquet: missing")
    d = copy(reports["fake"], tmp_path / "old")
    doc = summary(d)
    del doc["schema_version"]
    write_summary(d, doc)
    assert_fails(d, "schema_version")
    assert_fails(tmp_path / "nowhere", "not a report folder")


def test_recovery_summary_carries_schema_version(tmp_path):
    from report_fixtures import fake_recovery_dir

    d = fake_recovery_dir(tmp_path / "rec")
    doc = summary(d)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["provenance"]["schema_version"] == SCHEMA_VERSION
    assert doc["report_files"]["recovery.parquet"]["sha256"] == hashlib.sha256(
        (d / "recovery.parquet").read_bytes()).hexdigest()


def test_recovery_report_verifies_and_tampering_fails(tmp_path):
    from report_fixtures import fake_recovery_dir

    d = fake_recovery_dir(tmp_path / "rec")
    assert verify_report(d).ok, verify_report(d).message
    assert cli(d).exit_code == 0
    bad = copy(d, tmp_path / "bad")
    doc = summary(bad)
    doc["verdict"] = doc["provenance"]["verdict"] = "generalizing"
    write_summary(bad, doc)
    table = pq.read_table(bad / "recovery.parquet")
    rewrite_table(bad / "recovery.parquet", table, doc["provenance"])
    rehash(bad)
    assert_fails(bad, "verdict", "recomputed 'memorizing'")
    dropped = copy(d, tmp_path / "dropped")
    rewrite_table(dropped / "recovery.parquet", table.slice(1))
    assert_fails(dropped, "recovery.parquet")
    rehash(dropped)
    assert_fails(dropped, "n is")


def test_malformed_fields_fail_with_one_line(reports, tmp_path):
    d = copy(reports["fake"], tmp_path / "r")
    doc = summary(d)
    doc["settings"]["t_eval"] = "soon"
    doc["provenance"]["settings"]["t_eval"] = "soon"
    write_summary(d, doc)
    for name in ("samples.parquet", "tokens.parquet"):
        rewrite_table(d / name, pq.read_table(d / name), doc["provenance"])
    rehash(d)
    assert_fails(d, "malformed report")
