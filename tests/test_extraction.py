"""Evidence with training data (issue 15): the training-copy index against brute force, planted
near copies at any offset of a packed stream, the entropy gap, `scan --train` never changing the
verdict or the exit code, the clamped sampler and prefix-conditioned extraction in `recover`."""
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import memaudit
from memaudit.cli import app
from memaudit.extraction import (TrainingIndex, longest_true_run, near_copy_distance, ngram_size,
                                 read_training_documents)
from memaudit.recovery import RecoveryError, parse_pattern, pattern_keep_mask
from memaudit.sampling import SampleStreams, infill, reverse_process
from memaudit.stats import entropy_gap_statistics, extraction_statistics
from memaudit.verdict import load_rule

N = max(64, load_rule().min_samples)
STEPS = 16
DOCS = Path(__file__).resolve().parents[1] / "docs"

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("single_thread")


def verbatim_span_oracle(sample, stream) -> int:
    """The longest run of consecutive tokens of `sample` that occurs anywhere in `stream`, by plain
    substring search over tuples (no numpy, nothing from memaudit.extraction): the length k
    is binary-searched, as a substring of length k occurring implies one of every shorter length."""
    sample, stream = [int(t) for t in sample], [int(t) for t in stream]

    def occurs(k: int) -> bool:
        grams = {tuple(stream[p:p + k]) for p in range(len(stream) - k + 1)}
        return any(tuple(sample[i:i + k]) in grams for i in range(len(sample) - k + 1))

    lo, hi = 0, len(sample)                      # occurs(lo) holds (k = 0); find the largest k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if occurs(mid) else (lo, mid - 1)
    return lo


def brute_force(samples: np.ndarray, documents: np.ndarray):
    """Every window of the packed stream against every sample: (Hamming [N, W], longest span [N]),
    the span from `verbatim_span_oracle`, independent of the code under test."""
    stream = documents.reshape(-1)
    windows = np.lib.stride_tricks.sliding_window_view(stream, samples.shape[1])
    hamming = (windows[None] != samples[:, None]).sum(-1)
    spans = np.array([verbatim_span_oracle(s, stream) for s in samples])
    return hamming, spans


def assert_span_contract(found, truth, n: int) -> None:
    """The index's contract (memaudit.extraction): the longest verbatim span is exact when it is
    at least n tokens long, a lower bound below (0 when no n-gram of the sample occurs)."""
    found, truth = np.asarray(found), np.asarray(truth)
    long_enough = truth >= n
    assert np.array_equal(found[long_enough], truth[long_enough]), (found, truth, n)
    assert np.all(found[~long_enough] <= truth[~long_enough]), (found, truth, n)


def test_verbatim_span_oracle_on_hand_counted_cases():
    stream = np.array([5, 6, 7, 8, 9, 1, 2, 3, 4])
    assert verbatim_span_oracle([0, 7, 8, 9, 1, 0], stream) == 4          # 7 8 9 1
    assert verbatim_span_oracle([0, 0, 0], stream) == 0
    assert verbatim_span_oracle([3, 4, 5, 6], stream) == 2                # 3 4 | 5 6: not joined
    assert verbatim_span_oracle([5, 6, 7, 8, 9, 1, 2, 3, 4], stream) == 9


def test_longest_true_run_against_a_loop_and_hand_counts():
    hand = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 1, 1, 1, 0], [1, 0, 0, 0, 1]], dtype=bool)
    assert longest_true_run(hand).tolist() == [0, 5, 2, 3, 1]
    rng = np.random.default_rng(1)
    mask = rng.random((200, 23)) < 0.6
    expected = []
    for row in mask:                                  # an independent loop: count, reset at False
        best = run = 0
        for v in row:
            run = run + 1 if v else 0
            best = max(best, run)
        expected.append(best)
    assert longest_true_run(mask).tolist() == expected


def test_index_spans_meet_the_contract_against_the_oracle():
    """Spans shorter and longer than n, at stream edges and across document boundaries, against
    the independent oracle: exact from n tokens up, a lower bound below."""
    rng = np.random.default_rng(3)
    docs = rng.integers(0, 40, size=(30, 16))
    stream = docs.reshape(-1)
    n = ngram_size(16)
    samples = rng.integers(40, 80, size=(12, 16))                      # tokens absent from the stream
    plants = [(0, 0, 16), (1, 5, 3), (2, 7, n), (3, 0, n + 3), (4, 9, n - 1), (5, 2, 11), (6, 13, 3)]
    for row, at, k in plants:
        start = int(rng.integers(0, stream.size - k))
        samples[row, at:at + k] = stream[start:start + k]
    samples[7, :5] = stream[:5]                                         # the stream's first tokens
    samples[8, 10:] = stream[-6:]                                       # its last tokens
    samples[9, 2:2 + 2 * n] = stream[16 - n:16 + n]                     # across a document boundary
    truth = np.array([verbatim_span_oracle(s, stream) for s in samples])
    assert truth[0] == 16 and truth[3] >= n + 3 and truth[9] >= 2 * n and truth[10] <= 2
    m = TrainingIndex.build(docs, n).match(samples)
    assert_span_contract(m.longest_train_span, truth, n)
    assert (truth >= n).sum() >= 5 and (truth < n).sum() >= 3          # both sides of the contract are tested


@pytest.fixture(scope="module")
def memorizer(memorizing_checkpoint):
    return memaudit.load(memorizing_checkpoint)


def scan_single_threaded(checkpoint, **kw):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # nano models run faster on one thread
    try:
        return memaudit.scan(checkpoint, samples=N, steps=STEPS, seed=0, show_progress=False, adaptive=False, **kw)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mem_data(memorizer):
    return scan_single_threaded(memorizer, train_data="auto")


@pytest.fixture(scope="module")
def gen_data(generalizing_checkpoint):
    return scan_single_threaded(generalizing_checkpoint, train_data="auto")


# --------------------------------------------------------------------------- reference models
def test_index_finds_exactly_the_brute_force_copies_on_the_memorizing_model(mem_data, memorizer):
    docs, _ = read_training_documents("auto", memorizer)
    m = mem_data.training.matches
    hamming, spans = brute_force(mem_data.tokens, docs)
    truth = hamming.min(axis=1) == 0
    assert truth.mean() > 0.3                                       # measured 0.9 (64 samples, 16 steps)
    found = m.is_training_copy
    assert (found & truth).sum() / found.sum() == 1.0               # precision
    assert (found & truth).sum() / truth.sum() == 1.0               # recall
    for i in np.flatnonzero(truth):                                 # the training example it equals
        assert m.nearest_train_offset[i] == 0 and np.array_equal(docs[m.nearest_train_id[i]], mem_data.tokens[i])
        assert m.nearest_train_id[i] * docs.shape[1] == hamming[i].argmin()
    near = hamming.min(axis=1) <= m.near_distance
    assert np.array_equal(m.is_near_copy, near)
    assert np.array_equal(m.nearest_train_distance[near], hamming.min(axis=1)[near])
    assert_span_contract(m.longest_train_span, spans, ngram_size(mem_data.tokens.shape[1]))
    t = mem_data.summary()["training_data"]
    assert t["n_training_copies"] == int(truth.sum()) and t["extraction_rate"] == truth.mean()
    lo, hi = t["extraction_rate_ci"]
    assert lo <= t["extraction_rate"] <= hi
    assert sum(t["longest_span_histogram"]) == N


def test_generalizing_model_gives_no_copies(gen_data):
    t = gen_data.summary()["training_data"]
    assert t["index"]["n_documents"] == 65536
    assert t["extraction_rate"] == 0.0                              # measured 0 (seeds 0)
    assert t["near_copy_rate"] <= 0.01
    assert t["longest_span_quantiles"]["max"] < gen_data.tokens.shape[1]


def test_entropy_gap_separates_the_regimes(mem_data, gen_data):
    """Memorizing: the model is certain on its training sequences (≈ 0 nats); generalizing: training
    sequences keep the entropy of the language (≈ 1 nat at t_eval) like the samples."""
    for r in (mem_data, gen_data):
        gaps = r.summary()["training_data"]["entropy_gap"]
        assert [g["t"] for g in gaps] == [r.settings.t_eval, 1e-5]
        assert gaps[0]["sample_mean_entropy"] == pytest.approx(r.mean_entropy, rel=1e-6)   # the same draws
    mem_train = mem_data.summary()["training_data"]["entropy_gap"][0]["train_mean_entropy"]
    gen_train = gen_data.summary()["training_data"]["entropy_gap"][0]["train_mean_entropy"]
    assert mem_train < 0.05 and gen_train > 0.4, (mem_train, gen_train)    # measured 1e-4 and 0.98
    g = gen_data.summary()["training_data"]["entropy_gap"][0]
    assert abs(g["entropy_gap"]) < 0.2 and g["entropy_gap_ci"][0] <= g["entropy_gap"] <= g["entropy_gap_ci"][1]


def test_the_verdict_is_the_data_free_one(gen_data, generalizing_checkpoint):
    plain = scan_single_threaded(generalizing_checkpoint)
    assert plain.verdict == gen_data.verdict and plain.reason == gen_data.reason
    assert plain.stats == gen_data.stats and plain.training is None


def test_train_data_from_a_npy_file_or_an_array(memorizer, tmp_path):
    docs, _ = read_training_documents("auto", memorizer)
    np.save(tmp_path / "train.npy", docs)
    runs = {spec: scan_single_threaded(memorizer, train_data=spec) for spec in ("auto", str(tmp_path / "train.npy"))}
    runs["array"] = scan_single_threaded(memorizer, train_data=docs[::-1].copy())   # the examples in reverse order
    auto, npy, arr = runs["auto"].training, runs[str(tmp_path / "train.npy")].training, runs["array"].training
    assert npy.data["source"] == "npy" and arr.data["source"] == "array"
    assert np.array_equal(auto.matches.nearest_train_id, npy.matches.nearest_train_id)
    found = auto.matches.is_training_copy
    assert np.array_equal(found, arr.matches.is_training_copy)
    assert np.array_equal(arr.matches.nearest_train_id[found], len(docs) - 1 - auto.matches.nearest_train_id[found])


def test_cli_train_never_changes_the_exit_code(memorizing_checkpoint, tmp_path):
    base = ["scan", str(memorizing_checkpoint), "--samples", str(N), "--steps", "8", "--json", "--device", "cpu"]
    without = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    with_data = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--train", "auto"])
    assert without.exit_code == with_data.exit_code == 1, with_data.stderr
    a, b = json.loads(without.stdout), json.loads(with_data.stdout)
    assert "training_data" not in a and b["training_data"]["n_training_copies"] > 0
    b.pop("training_data")
    a.pop("timings"), b.pop("timings")
    assert a == b                                                  # the data-free part is untouched
    assert "evidence with training data" in with_data.stderr
    columns = set(pq.read_schema(tmp_path / "b" / "samples.parquet").names)
    assert {"is_training_copy", "nearest_train_id", "nearest_train_distance", "longest_train_span"} <= columns
    assert "is_training_copy" not in pq.read_schema(tmp_path / "a" / "samples.parquet").names
    page = (tmp_path / "b" / "report.html").read_text()
    assert "Evidence with training data" in page and "Beside the verdict" in page
    again = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--train", "auto"])
    for name in ("samples.parquet", "summary.json", "report.html"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name
    assert again.exit_code == 1


def test_cli_bad_training_data_exits_2_before_writing(memorizing_checkpoint, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((4, 5), dtype=np.int64))
    for spec in (str(tmp_path / "missing.npy"), str(tmp_path / "short.npy")):
        r = runner.invoke(app, ["scan", str(memorizing_checkpoint), "--samples", "4", "--steps", "1", "--train", spec,
                                "--out", str(tmp_path / "out"), "--device", "cpu"])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and r.stderr.count("\n") == 1 and "--train" in r.stderr
        assert not (tmp_path / "out").exists()


def test_new_report_fields_are_documented(mem_data):
    from memaudit.report import samples_table

    doc = (DOCS / "report-schema.md").read_text(encoding="utf-8")
    names = samples_table(mem_data).schema.names + list(mem_data.summary()["training_data"]) \
        + list(mem_data.summary()["training_data"]["index"]) + list(mem_data.summary()["training_data"]["entropy_gap"][0])
    missing = [c for c in names if f"`{c}`" not in doc]
    assert not missing, missing


# ------------------------------------------------------------------------------ the index alone
def test_planted_near_copies_among_100k_random_sequences():
    rng = np.random.default_rng(0)
    length, vocab = 64, 1000
    docs = rng.integers(0, vocab, size=(100_000, length))
    stream = docs.reshape(-1)
    index = TrainingIndex.build(docs, ngram_size(length))
    near = near_copy_distance(length)
    samples, truth = [], []
    for j in range(40):
        k = j % (near + 1)
        start = int(rng.integers(0, stream.size - length))          # any offset, across documents too
        window = stream[start:start + length].copy()
        if j == near:                                               # evenly spread: the pigeonhole worst case
            where = np.linspace(0, length - 1, k).round().astype(int)
        else:
            where = rng.choice(length, size=k, replace=False)
        window[where] = (window[where] + 1 + rng.integers(0, vocab - 1, size=k)) % vocab
        samples.append(window)
        truth.append((start, k))
    samples += list(rng.integers(0, vocab, size=(20, length)))      # unrelated sequences
    m = index.match(np.array(samples))
    for i, (start, k) in enumerate(truth):
        assert m.is_near_copy[i] and m.nearest_train_distance[i] == k, (i, k)
        assert m.nearest_train_id[i] * length + m.nearest_train_offset[i] == start
        assert m.is_training_copy[i] == (k == 0)
        assert np.array_equal(m.nearest_train_tokens[i], stream[start:start + length])
    assert not m.is_near_copy[len(truth):].any() and not m.is_training_copy[len(truth):].any()
    assert (m.longest_train_span[:len(truth)] >= length // (near + 1) - 1).all()


def test_spans_and_distances_agree_with_brute_force_on_a_small_stream():
    rng = np.random.default_rng(1)
    docs = rng.integers(0, 6, size=(300, 32))                       # small vocabulary: many chance n-grams
    samples = rng.integers(0, 6, size=(30, 32))
    samples[:10] = docs.reshape(-1)[rng.integers(0, docs.size - 32, size=10)[:, None] + np.arange(32)]
    samples[:10, 5] = (samples[:10, 5] + 1) % 6
    m = TrainingIndex.build(docs, ngram_size(32)).match(samples)
    hamming, spans = brute_force(samples, docs)
    best = hamming.min(axis=1)
    assert np.array_equal(m.is_near_copy, best <= m.near_distance)
    sure = best <= m.near_distance
    assert np.array_equal(m.nearest_train_distance[sure], best[sure])
    assert (m.nearest_train_distance[~sure] >= best[~sure]).all()   # an upper bound beyond the threshold
    long = spans >= ngram_size(32)
    assert np.array_equal(m.longest_train_span[long], spans[long])
    assert (m.longest_train_span <= spans).all()


def test_a_sample_sharing_nothing_has_no_nearest_window():
    docs = np.zeros((10, 16), dtype=np.int64)
    m = TrainingIndex.build(docs, ngram_size(16)).match(np.ones((2, 16), dtype=np.int64))
    assert (m.nearest_train_id == -1).all() and (m.nearest_train_distance == -1).all()
    assert (m.longest_train_span == 0).all() and not m.is_near_copy.any()


def test_statistics():
    s = extraction_statistics(np.array([1, 0, 0, 1], bool), np.array([1, 1, 0, 1], bool), np.array([8, 3, 0, 8]),
                              seq_len=8, confidence=0.95)
    assert s["extraction_rate"] == 0.5 and s["near_copy_rate"] == 0.75
    assert s["longest_span_histogram"] == [1, 0, 0, 1, 0, 0, 0, 0, 2]
    assert s["extraction_rate_ci"][0] < 0.5 < s["extraction_rate_ci"][1]
    g = entropy_gap_statistics(np.full(50, 0.1), np.full(40, 0.5), resamples=100, confidence=0.95, seed=0)
    assert g["entropy_gap"] == pytest.approx(0.4) and g["entropy_gap_ci"] == pytest.approx([0.4, 0.4])


# ------------------------------------------------------------------ clamped sampler, patterns
class Recording:
    """A Denoiser stand-in that records every input the sampler gives the network."""

    def __init__(self, denoiser):
        self.inner, self.seen = denoiser, []
        self.schedule, self.device, self.vocab_size = denoiser.schedule, denoiser.device, denoiser.vocab_size

    def __call__(self, x, t):
        self.seen.append(x.clone())
        return self.inner(x, t)


def test_clamped_positions_never_change(memorizer):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, memorizer.vocab_size, (16, memorizer.seq_len), generator=g)
    keep = torch.rand(x.shape, generator=g) < 0.4
    rec = Recording(memorizer)
    out = reverse_process(rec, x, 1.0, 6, streams=SampleStreams(1, ("test",), range(16)), fixed=keep, final="ancestral")
    assert len(rec.seen) == 7 and all(torch.equal(s[keep], x[keep]) for s in rec.seen)   # at every step
    assert torch.equal(out[keep], x[keep]) and not torch.equal(out[~keep], x[~keep])
    filled = infill(memorizer, x, keep, steps=6, seed=3)
    assert torch.equal(filled[keep], x[keep])
    assert torch.equal(filled, infill(memorizer, x, keep, steps=6, seed=3))              # seeded
    assert torch.equal(filled, infill(memorizer, x, keep, steps=6, seed=3, batch_size=5))  # per-row streams
    with pytest.raises(ValueError):
        reverse_process(memorizer, x, 1.0, 2, fixed=keep[:, :3])


def test_pattern_masks():
    assert parse_pattern("uniform") == ("uniform", None) and parse_pattern("prefix:0.5") == ("prefix", 0.5)
    for bad in ("prefix", "prefix:1", "suffix:0", "span:x", "middle:0.5", "uniform:0.2"):
        with pytest.raises(RecoveryError):
            parse_pattern(bad)
    p = pattern_keep_mask("prefix", 0.25, 3, 8, seed=0)
    assert p.shape == (3, 8) and (p[:, :2]).all() and not p[:, 2:].any()
    s = pattern_keep_mask("suffix", 0.25, 3, 8, seed=0)
    assert s[:, 6:].all() and not s[:, :6].any()
    sp = pattern_keep_mask("span", 0.5, 200, 8, seed=0)
    free = ~sp
    assert (free.sum(1) == 4).all()
    assert all(np.ptp(np.flatnonzero(row)) == 3 for row in free)           # one contiguous span
    assert len({tuple(np.flatnonzero(row)) for row in free}) == 5           # every start used


def test_prefix_extraction_separates_training_from_held_out(memorizer):
    result = memaudit.recover(memorizer, t0=(0.25,), n=24, seed=0, steps_per_unit=24,
                              pattern=["uniform", "prefix:0.5", "span:0.25"])
    assert result.settings.patterns == ("prefix:0.5", "span:0.25")
    prefix = {p["split"]: p for p in result.patterns if p["pattern"] == "prefix:0.5"}
    train, test = prefix["train"]["exact_completion"], prefix["test"]["exact_completion"]
    assert train >= 0.8 and test <= 0.2, (train, test)             # measured 1.0 and 0.0 (100 steps)
    assert prefix["train"]["exact_completion_ci"][0] > prefix["test"]["exact_completion_ci"][1]
    gap = next(g for g in result.pattern_gaps if g["pattern"] == "prefix:0.5")
    assert gap["gap"] == pytest.approx(train - test) and gap["gap_ci"][0] > 0.5
    plain = memaudit.recover(memorizer, t0=(0.25,), n=24, seed=0, steps_per_unit=24)
    assert plain.verdict == result.verdict and plain.summaries == result.summaries   # patterns never decide
    assert "patterns" in result.summary() and "patterns" not in plain.summary()
    from memaudit.report import render_recovery_html

    assert "Conditioning patterns" in render_recovery_html(result).decode()


def test_cli_pattern_errors_exit_2(memorizing_checkpoint):
    for bad in ("prefix:1.5", "bogus"):
        r = runner.invoke(app, ["recover", str(memorizing_checkpoint), "--pattern", bad, "--device", "cpu"])
        assert r.exit_code == 2 and "Traceback" not in r.output and re.search("pattern", r.stderr), r.output


def test_worked_example_runs(memorizer, capsys):
    import runpy

    module = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "training_evidence.py"))
    result, rec = module["audit"](memorizer, samples=16, steps=4, n=8, steps_per_unit=8)
    assert result.training is not None and rec.pattern_gaps
    out = capsys.readouterr().out
    assert "data-free verdict" in out and "exact completion train" in out and "infill" in out


def test_cli_recover_patterns_beside_the_exit_code(memorizing_checkpoint, tmp_path):
    base = ["recover", str(memorizing_checkpoint), "--t0", "0.25", "--n", "8", "--steps-per-unit", "12", "--json",
            "--device", "cpu"]
    plain = runner.invoke(app, base)
    patterned = runner.invoke(app, [*base, "--pattern", "uniform,prefix:0.5", "--out", str(tmp_path / "r")])
    assert plain.exit_code == patterned.exit_code == 1, patterned.output
    doc = json.loads(patterned.stdout)
    assert [p["pattern"] for p in doc["patterns"]] == ["prefix:0.5", "prefix:0.5"]
    assert doc["settings"]["patterns"] == ["prefix:0.5"] and "patterns" not in json.loads(plain.stdout)
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["pattern_gaps"][0]["pattern"] == "prefix:0.5" and "patterns" in saved["provenance"]["protocol"]
