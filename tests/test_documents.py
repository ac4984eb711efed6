"""Per-document evidence (memaudit.documents) and the edge-conditioned infill pattern."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from memaudit.documents import duplication_counts, per_document_evidence
from memaudit.recovery import RecoveryError, parse_pattern, pattern_keep_mask


def test_infill_keeps_both_ends():
    assert parse_pattern("infill:0.5") == ("infill", 0.5)
    keep = pattern_keep_mask("infill", 0.5, 2, 8, seed=0)
    assert keep.tolist() == [[True, True, False, False, False, False, True, True]] * 2
    with pytest.raises(RecoveryError):
        parse_pattern("infill:1.5")


def test_duplication_counts_see_a_pasted_document_at_any_offset():
    rng = np.random.default_rng(0)
    doc = rng.integers(0, 500, 40)
    corpus = rng.integers(0, 500, (200, 32))
    for k in range(50):                          # the document pasted 50 times at varying offsets
        off = k % 8
        corpus[k, :32] = doc[off:off + 32]
    counts = duplication_counts(corpus[[0, 3, 120]], corpus)
    assert counts[0] >= 40 and counts[1] >= 40 and counts[2] == 1


def test_most_exposed_block_is_the_stored_one():
    rng = np.random.default_rng(1)
    n, length = 64, 32
    x0 = np.concatenate([rng.integers(0, 500, (n, length)), rng.integers(0, 500, (n, length))])
    rate = np.concatenate([rng.uniform(0.1, 0.35, n), rng.uniform(0.1, 0.35, n)])
    rate[5] = 0.9                                  # one stored training block
    x0[5] = x0[6]                                  # … duplicated once in the sample
    rows = {"split": ["train"] * n + ["test"] * n, "t0": np.full(2 * n, 0.5), "recovery_rate": rate,
            "x0": x0, "example_id": np.concatenate([np.arange(n), np.arange(n)])}
    pattern_rates = {("infill:0.5", "train"): np.where(np.arange(n) == 5, 0.95, 0.2),
                     ("infill:0.5", "test"): np.full(n, 0.2)}
    doc = per_document_evidence(rows, 0.5, pattern_rates, corpus=x0[:n], decode=lambda ids: f"{len(ids)} tokens")
    top = doc["most_exposed"][0]
    assert top["example_id"] == 5 and top["stored"] and top["duplication_count"] == 2
    assert top["completion"]["infill:0.5"] == 0.95 and top["text"] == "32 tokens"
    assert doc["n_stored"] == 1 and doc["stored_share"] == pytest.approx(1 / 64 - 0.01)
    assert sum(e["stored"] for e in doc["most_exposed"]) == 1
    assert doc["finding"] is False                  # one block above a 99th percentile is what 1 % predicts
    rate[:7] = 0.9                                  # seven of 64: more than 1 % false positives explain
    pattern_rates[("infill:0.5", "train")] = np.where(np.arange(n) < 7, 0.95, 0.2)
    assert per_document_evidence(rows, 0.5, pattern_rates, corpus=None)["finding"] is True


def test_recover_reports_documents_and_infill(tmp_path):
    from report_fixtures import tiny_denoiser

    from memaudit.recovery import recover

    den = tiny_denoiser(vocab=16, length=12)
    g = torch.Generator().manual_seed(0)
    train, test = torch.randint(0, 16, (10, 12), generator=g), torch.randint(0, 16, (10, 12), generator=g)
    res = recover(den, train=train, test=test, t0=(0.5,), n=10, steps_per_unit=4, pattern="infill:0.5",
                  bootstrap_resamples=20, show_progress=False)
    s = res.summary()
    assert [p["pattern"] for p in s["patterns"]] == ["infill:0.5", "infill:0.5"]
    assert s["documents"]["n_train"] == 10 and len(s["documents"]["most_exposed"]) == 10
    assert "infill:0.5" in s["documents"]["most_exposed"][0]["completion"]
