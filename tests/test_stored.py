"""Data-free stored-sequence search on deterministic fake associative memories: a held sequence is
found from re-noised and shifted starts, with its basin above the typical baseline; a model that
holds nothing gets no finding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from memaudit.stored import StoredSettings, chao1, degenerate, low_entropy_runs, search_stored

from memory_fakes import MemoryDenoiser

V, L = 64, 32
FAST = StoredSettings(starts=8, steps=8, min_span=16, core=8, basin_t0=(0.25, 0.5), baseline_windows=8)


def stored_sequence(seed=3):
    return torch.from_numpy(np.random.default_rng(seed).permutation(V)[:L].astype(np.int64))[None]


def typical_samples(n=8, seed=0):
    """Samples of the background language (x_{i+1} = x_i + 1 mod V) with noise."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, V, n)
    x = (start[:, None] + np.arange(L)[None]) % V
    flip = rng.random((n, L)) < 0.3
    return np.where(flip, rng.integers(0, V, (n, L)), x).astype(np.int64)


def test_helpers():
    ent = np.array([0.0] * 5 + [1.0] + [0.0] * 20)
    toks = np.arange(26)
    assert low_entropy_runs(ent, toks, 0.1, 4, None) == [(0, 5), (6, 26)]
    assert low_entropy_runs(ent, toks, 0.1, 5, eos=10) == [(0, 5), (11, 26)]
    assert degenerate(np.array([1, 2] * 10), 0.35) and degenerate(np.zeros(20, dtype=int), 0.35)
    assert not degenerate(np.arange(20), 0.35)
    assert chao1([]) == (0.0, [0.0, 0.0])
    assert chao1([3, 4])[0] == 2.0
    est, (lo, hi) = chao1([1, 1, 2])
    assert est == pytest.approx(3 + 4 / 2) and lo <= est <= hi


def test_search_finds_the_held_sequence_from_sample_starts():
    held = stored_sequence()
    fake = MemoryDenoiser(held, V, L, match=0.25, confidence=0.995)
    samples = typical_samples()
    samples[2] = held[0].numpy()                           # one sample began on the stored sequence
    samples[2, 24:] = np.random.default_rng(1).integers(0, V, L - 24)
    res = search_stored(fake, FAST, samples=samples, batch_size=16)
    assert res.found == 1, res.candidates
    hit = [c for c in res.candidates if c["stored"]][0]
    assert hit["length"] >= 16 and hit["recurrence"] >= 1
    assert hit["basin"]["0.5"] >= 0.6 > res.baseline["q95"]
    assert res.finding.startswith("a stored subset of ≈ 1")
    assert res.network_calls > 0


def test_search_never_fires_on_a_model_that_holds_nothing():
    fake = MemoryDenoiser([], V, L, confidence=0.995)
    res = search_stored(fake, FAST, samples=typical_samples(), batch_size=16)
    assert res.found == 0 and res.finding is None


def test_repetition_attractors_are_not_findings():
    """A model whose greedy dynamics collapse onto a repeated token (low entropy, wide basin) is no
    stored-subset finding: degenerate spans are filtered."""
    fake = MemoryDenoiser(torch.zeros((1, L), dtype=torch.int64), V, L, match=0.0, confidence=0.995)
    res = search_stored(fake, FAST, samples=typical_samples(), batch_size=16)
    assert res.found == 0


def test_scan_reports_the_search_and_the_gate_reads_it():
    from report_fixtures import TEST_RULE, tiny_denoiser

    from memaudit.probe import scan
    from memaudit.verdict import gate_exit_code

    res = scan(tiny_denoiser(), samples=8, steps=2, seed=0, show_progress=False, bootstrap_resamples=50,
               fixed_point_steps=1, rule=TEST_RULE, stored=FAST)
    s = res.summary()
    assert s["stored_subset"]["n_starts"] == 24 and s["finding"] == res.verdict   # no boundary starts: no tokenizer
    assert res.stored_found is False
    off = scan(tiny_denoiser(), samples=8, steps=2, seed=0, show_progress=False, bootstrap_resamples=50,
               fixed_point_steps=1, rule=TEST_RULE, stored="off")
    assert "stored_subset" not in off.summary()
    assert gate_exit_code("generalizing", "stored-subset", stored_found=True) == 1
    assert gate_exit_code("generalizing", "stored-subset", stored_found=False) == 0
    assert gate_exit_code("generalizing", "memorizing", stored_found=True) == 0
    assert gate_exit_code("generalizing", "stored-subset", exit_zero=True, stored_found=True) == 0


def test_report_html_shows_the_search(tmp_path):
    import json

    from report_fixtures import TEST_RULE, tiny_denoiser, write_report

    from memaudit.probe import scan

    res = scan(tiny_denoiser(), samples=8, steps=2, seed=0, show_progress=False, bootstrap_resamples=50,
               fixed_point_steps=1, rule=TEST_RULE, stored=FAST)
    write_report(res, tmp_path)
    assert "Stored subset (data-free search)" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["stored_subset"]["n_starts"] == 24


def test_batch_rows_gate_on_a_stored_subset_finding():
    """A multi-checkpoint scan's exit code honours --fail-on stored-subset from each report, as a
    single scan does (data-free finding, or the per-document finding with --train)."""
    from memaudit.experiments.batch import CheckpointScan

    plain = CheckpointScan("a", "a", None, summary={"verdict": "generalizing", "stored_subset": {"found": 0}})
    found = CheckpointScan("b", "b", None, summary={"verdict": "generalizing", "stored_subset": {"found": 2}})
    with_data = CheckpointScan("c", "c", None, summary={"verdict": "generalizing",
                                                        "training_data": {"documents": {"finding": True}}})
    assert [s.exit_code("stored-subset") for s in (plain, found, with_data)] == [0, 1, 1]
    assert [s.exit_code("memorizing") for s in (plain, found, with_data)] == [0, 0, 0]
    assert found.exit_code("stored-subset", exit_zero=True) == 0
