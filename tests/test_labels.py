"""One checkpoint label (issue 26): the scan summary, the recovery summary and the CI/report
writers name a checkpoint the same way, whatever shape of path or hub id it was given as."""
from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

import pytest

from memaudit.adapters import load
from memaudit.adapters.common import hub_provenance
from memaudit.labels import IN_MEMORY, checkpoint_label
from memaudit.provenance import model_provenance
from memaudit.report.ci import checkpoint_name, junit_xml, summary_markdown
from report_fixtures import fake_recovery_result, fake_scan_result
from test_scan import tiny_checkpoint


@pytest.fixture(scope="module")
def results():
    return fake_scan_result(n=12, length=12, vocab=16), fake_recovery_result(n=4, length=12, vocab=16)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    local = tiny_checkpoint(root / "runs" / "ckpt-100")
    snapshot = tiny_checkpoint(root / "hub" / "models--org--tiny-model" / "snapshots" / "0123abcd")
    return root, local, snapshot


def agreed_label(results, model: dict) -> str:
    """The label each of the three places gives `model`, asserted equal."""
    scan_result, recovery_result = results
    scan_doc = dataclasses.replace(scan_result, model=model).summary()
    recovery_doc = dataclasses.replace(recovery_result, model=model).summary()
    label = checkpoint_label(model) or IN_MEMORY
    assert (scan_doc["checkpoint"] or IN_MEMORY) == (recovery_doc["checkpoint"] or IN_MEMORY) == label
    assert checkpoint_name(scan_doc) == checkpoint_name(recovery_doc) == label
    without = {k: v for k, v in scan_doc.items() if k != "checkpoint"}   # derived from the model alone
    assert checkpoint_name(without) == label
    assert label in junit_xml(scan_doc).decode() and label.replace("`", "") in summary_markdown(scan_doc)
    return label


def test_local_path_shapes_get_one_label(results, checkpoints, monkeypatch):
    root, local, _ = checkpoints
    monkeypatch.chdir(root)
    (matched,) = glob.glob(str(root / "runs" / "ckpt-*"))          # what a glob argument expands to
    shapes = [str(local), str(local) + os.sep, "runs/ckpt-100", "runs/ckpt-100/", "./runs/../runs/ckpt-100",
              matched, Path("runs/ckpt-100")]
    labels = {agreed_label(results, model_provenance(load(shape))) for shape in shapes}
    assert labels == {str(local.resolve())}


def test_a_file_checkpoint_is_named_by_its_resolved_path(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "last.ckpt").write_bytes(b"")
    model = {"checkpoint": str(Path("last.ckpt").resolve()), "family": "duo"}   # as every adapter records it
    assert agreed_label(results, model) == str(tmp_path / "last.ckpt")


def test_a_hub_checkpoint_is_named_by_its_id_and_revision(results, checkpoints):
    _, _, snapshot = checkpoints
    # A hub-cache snapshot folder, recorded as the sedd, lightning and remote-code adapters do.
    model = {**model_provenance(load(str(snapshot) + "/")), **hub_provenance(Path(str(snapshot) + "/"))}
    assert model["checkpoint"] == str(snapshot.resolve())
    assert agreed_label(results, model) == "org/tiny-model@0123abcd"
    assert agreed_label(results, {"hub_id": "org/tiny-model", "checkpoint": "/cache/x"}) == "org/tiny-model"


def test_an_in_memory_model_has_no_path(results):
    scan_result, recovery_result = results
    model = {"family": "memaudit", "vocab_size": 16, "seq_len": 12}
    assert dataclasses.replace(scan_result, model=model).summary()["checkpoint"] is None
    assert dataclasses.replace(recovery_result, model=model).summary()["checkpoint"] is None
    assert agreed_label(results, model) == IN_MEMORY
