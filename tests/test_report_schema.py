"""docs/report-schema.md, section by section, against what the code writes (issue 25): each table
lists exactly the columns or fields written — nothing written is undocumented, nothing documented
is missing from the files. Rows marked "only with" an option are checked to be absent without it.
No trained model: fake results in the exact on-disk schema (tests/report_fixtures.py) and a real
scan of a tiny untrained network with training data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from memaudit.report import write_report

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "report-schema.md"


def sections(text: str) -> dict[str, str]:
    """Heading (without #'s) → its text up to the next heading of any level."""
    out = {}
    for part in re.split(r"(?m)^(?=#{2,4} )", text):
        if part.startswith("#"):
            title, _, body = part.partition("\n")
            out[title.lstrip("#").strip()] = body
    return out


def tables(body: str) -> list[list[tuple[list[str], str]]]:
    """The Markdown tables of a section (also indented ones, inside list items): each a list of rows
    (the backticked names of its first cell, the rest of the row)."""
    found, current = [], None
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if current is None:
                current = []            # the header row
                continue
            if re.fullmatch(r"[-: ]+", cells[0]):
                continue
            current.append((re.findall(r"`([^`]+)`", cells[0]), " | ".join(cells[1:])))
        elif current is not None:
            found.append(current)
            current = None
    if current is not None:
        found.append(current)
    return found


def documented(section: str, table: int = 0) -> tuple[set[str], set[str]]:
    """(every name of the table, the names on rows that say 'only with')."""
    rows = tables(sections(SCHEMA.read_text(encoding="utf-8"))[section])[table]
    names = {n for ns, _ in rows for n in ns}
    conditional = {n for ns, rest in rows for n in ns if "only with" in rest}
    return names, conditional


def test_sections_parse():
    s = sections(SCHEMA.read_text(encoding="utf-8"))
    for title in ("`samples.parquet`", "`tokens.parquet`", "`summary.json`", "The `memaudit` metadata blob",
                  "`recovery.parquet`", "`summary.json` of a recovery"):
        assert title in s, title
    assert tables("| a | b |\n|---|---|\n| `x`, `y` | 1 |\n\ntext\n") == [[(["x", "y"], "1")]]


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    from report_fixtures import fake_scan_result

    out = tmp_path_factory.mktemp("scan")
    write_report(fake_scan_result(), out)
    return out


@pytest.fixture(scope="module")
def train_scan_dir(tmp_path_factory):
    """A real scan of a tiny untrained network with training data (token ids) and --n-train."""
    from memaudit.probe import ScanSettings, scan
    from report_fixtures import TEST_RULE, tiny_denoiser

    den = tiny_denoiser()
    docs = np.random.default_rng(0).integers(0, den.vocab_size, size=(20, den.seq_len))
    settings = ScanSettings(samples=8, steps=2, seed=0, bootstrap_resamples=50, fixed_point_steps=1, n_train=20)
    result = scan(den, settings=settings, show_progress=False, rule=TEST_RULE, train_data=docs)
    out = tmp_path_factory.mktemp("train-scan")
    write_report(result, out)
    return out


def test_samples_parquet_columns(scan_dir, train_scan_dir):
    base, _ = documented("`samples.parquet`", 0)
    training, _ = documented("`samples.parquet`", 1)
    written = set(pq.read_schema(scan_dir / "samples.parquet").names)
    assert base == written, (base - written, written - base)
    with_train = set(pq.read_schema(train_scan_dir / "samples.parquet").names)
    assert training == with_train - written, (training - with_train, with_train - written - training)


def test_tokens_parquet_columns(scan_dir):
    from memaudit.report import tokens_table
    from report_fixtures import fake_scan_result

    names, _ = documented("`tokens.parquet`")
    written = set(pq.read_schema(scan_dir / "tokens.parquet").names)
    result = fake_scan_result()
    result.entropy = result.entropy.repeat(2, axis=0)
    result.top1_prob = result.top1_prob.repeat(2, axis=0)
    result.t_values = [result.t_values[0], 0.1]
    with_profile = set(tokens_table(result).schema.names)
    assert names == written | with_profile, (names - written - with_profile, (written | with_profile) - names)
    assert with_profile - written == {"t_eval"}


def test_summary_json_fields(scan_dir, train_scan_dir):
    names, conditional = documented("`summary.json`", 0)
    written = set(json.loads((scan_dir / "summary.json").read_text()))
    with_options = set(json.loads((train_scan_dir / "summary.json").read_text()))
    assert not conditional & written, conditional & written             # 'only with' means: not without
    assert names - conditional == written, (names - conditional - written, written - names)
    # the options given to the second scan (--train, --n-train) write their fields
    assert {"training_data", "n_train", "n_train_comparison"} <= with_options & conditional
    assert with_options - written <= conditional


def test_training_data_fields(train_scan_dir):
    names, _ = documented("`summary.json`", 1)
    written = set(json.loads((train_scan_dir / "summary.json").read_text())["training_data"])
    assert names == written, (names - written, written - names)


def test_metadata_blob_and_rule(scan_dir):
    names, _ = documented("The `memaudit` metadata blob", 0)
    blob = json.loads(pq.read_schema(scan_dir / "samples.parquet").metadata[b"memaudit"])
    assert names == set(blob), (names - set(blob), set(blob) - names)
    rows = tables(sections(SCHEMA.read_text(encoding="utf-8"))["The `memaudit` metadata blob"])[0]
    rule_row = next(rest for ns, rest in rows if ns == ["rule"])
    listed = set(re.findall(r"`([^`]+)`", rule_row)) - {"Rule.describe()", "[min, max]"}
    written = set(json.loads((scan_dir / "summary.json").read_text())["rule"])
    assert listed == written, (listed - written, written - listed)
    assert written == set(blob["rule"])


def test_recovery_columns_and_summaries(tmp_path):
    from report_fixtures import fake_recovery_dir

    out = fake_recovery_dir(tmp_path / "rec")
    names, _ = documented("`recovery.parquet`")
    written = set(pq.read_schema(out / "recovery.parquet").names)
    optional_text = {"original_text", "corrupted_text", "restored_text"}          # only with a tokenizer
    assert names - optional_text == written - optional_text, (names - written, written - names)
    summary = json.loads((out / "summary.json").read_text())
    per_entry, _ = documented("`summary.json` of a recovery", 0)
    assert per_entry == set(summary["summaries"][0]), (per_entry - set(summary["summaries"][0]),
                                                       set(summary["summaries"][0]) - per_entry)
