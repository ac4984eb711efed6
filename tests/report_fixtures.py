"""Small scan reports in the exact on-disk schema, built without training a model.

`fake_scan_result` fills a real `memaudit.probe.ScanResult` with controlled arrays (some samples
near zero entropy, a duplicate, text that needs HTML escaping) and lets the real summary, rule and
report writers do the rest, so the files have exactly the schema `memaudit scan --out` writes.
`tiny_scan_dir` runs a real scan of a tiny untrained network (a second or two on a CPU).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from memaudit.report import write_recovery_report, write_report

HOSTILE_TEXT = '<script>alert("x")</script> & <b>bold</b>'
VOCAB = ["<|eos|>", "<b>", "</b>", " the", " cat", "&amp;", " sat", "\n", " on", " mat", "<script>", "é"]


# A fixed rule, so these fixtures do not change verdict when the shipped rule is recalibrated.
TEST_RULE = {
    "name": "test-rule", "version": 1, "status": "provisional", "source": "tests/report_fixtures.py",
    "t_eval": 1e-05, "tau": 0.1, "min_samples": 32, "confidence": 0.95, "bootstrap_resamples": 200,
    "thresholds": {"memorizing": {"mean_entropy_max": 0.25, "near_zero_sample_fraction_min": 0.5},
                   "generalizing": {"mean_entropy_min": 0.5, "near_zero_sample_fraction_max": 0.1,
                                    "duplicate_rate_max": 0.05}},
    "undertrained": {"entropy_ratio_min": 0.75, "entropy_ratio_soft": 0.6, "fixed_point_fraction_max": 0.5},
}


def toy_decode(ids) -> str:
    """A decoder over VOCAB (some tokens need escaping) for per-token highlighting tests."""
    return "".join(VOCAB[int(i) % len(VOCAB)] for i in ids)


def fake_scan_result(n: int = 40, length: int = 24, vocab: int = 64, seed: int = 0, memorizing_share: float = 0.3,
                     texts: bool = True, scale: float = 1.0):
    from memaudit.probe import ScanResult, ScanSettings, find_duplicates, near_copies, summarize
    from memaudit.verdict import Evidence, load_rule
    from memaudit.verdict.sequential import stopping

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(n, length)).astype(np.int64)
    tokens[5] = tokens[3]                                   # one duplicate sample
    entropy = (rng.gamma(2.0, 0.8, size=(1, n, length)) * scale).astype(np.float32)
    k = int(round(memorizing_share * n))
    entropy[0, :k] *= 0.01                                  # near-zero samples
    entropy[0, k:, :3] = 0.001                              # a few low-entropy tokens elsewhere
    top1 = np.exp(-entropy).astype(np.float32)
    is_dup, dup_of = find_duplicates(tokens)
    fp_distance = np.where(rng.random(n) < 0.5, 0.0, rng.random(n) * 0.5).astype(np.float32)
    rule = load_rule(TEST_RULE)
    settings = ScanSettings(samples=n, steps=8, seed=seed, t_eval=rule.t_eval, tau=rule.tau, bootstrap_resamples=200,
                            confidence=rule.confidence, adaptive=False).resolve(rule, "cpu")
    basin = (rng.random(n) * 0.9).astype(np.float32)          # near-zero samples are attractors
    basin[:k] = 1.0
    near = near_copies(tokens, rule.evidence["near_copy_fraction"])
    stats = summarize(entropy, top1, dup_of, fp_distance, basin, vocab, settings, [settings.t_eval], near,
                      rule.evidence["near_copy_fraction"], tokens)
    evidence = Evidence.from_stats(stats, steps=settings.steps, n_parameters=1234)
    decision = rule.decide(evidence)
    text_list = [(HOSTILE_TEXT + " " + toy_decode(row)) if texts else None for row in tokens]
    model = {"checkpoint": "runs/<fake> & model", "family": "memaudit", "weights": "ema", "vocab_size": vocab,
             "seq_len": length, "n_parameters": 1234, "has_tokenizer": texts,
             "files": {"model.safetensors": "0" * 64}}
    return ScanResult(verdict=decision.verdict, reason=decision.reason, explanation=decision.explanation,
                      settings=settings, rule=rule, model=model, tokens=tokens, t_values=[settings.t_eval],
                      entropy=entropy, top1_prob=top1, texts=text_list, is_duplicate=is_dup, duplicate_of=dup_of,
                      is_fixed_point=fp_distance == 0, fixed_point_distance=fp_distance, basin_agreement=basin,
                      near_copies_earlier=near, stats=stats, domain=rule.domain_check(evidence),
                      stopping=stopping(False, [n], n, decision.verdict).describe())


def fake_scan_dir(out: Path, **kwargs) -> Path:
    result = fake_scan_result(**kwargs)
    write_report(result, out)
    return out


def tiny_denoiser(vocab: int = 16, length: int = 12, seed: int = 0):
    import torch

    from memaudit.denoiser import Denoiser
    from memaudit.diffusion import LogLinearSchedule
    from memaudit.model import DDiT, DDiTConfig

    torch.manual_seed(seed)
    cfg = DDiTConfig(vocab_size=vocab, seq_len=length, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=2)
    return Denoiser(model=DDiT(cfg), schedule=LogLinearSchedule(), vocab_size=vocab, seq_len=length)


def tiny_scan_dir(out: Path, samples: int = 8) -> Path:
    """A real scan (untrained tiny network, 2 sampler steps) written to `out`."""
    from memaudit.probe import scan

    result = scan(tiny_denoiser(), samples=samples, steps=2, seed=0, show_progress=False, bootstrap_resamples=50,
                  fixed_point_steps=1, rule=TEST_RULE)
    write_report(result, out)
    return out


def fake_recovery_dir(out: Path, **kwargs) -> Path:
    """A recovery report (recovery.parquet + summary.json) in the exact schema `memaudit recover`
    writes."""
    write_recovery_report(fake_recovery_result(**kwargs), out)
    return out


def fake_recovery_result(n: int = 12, length: int = 16, vocab: int = 32, seed: int = 0):
    """A real RecoveryResult from controlled arrays: training examples restored, held-out ones not
    (memorizing)."""
    from memaudit.recovery import RecoveryResult, RecoverySettings, gap_table, sequence_metrics, summarize

    rng = np.random.default_rng(seed)
    settings = RecoverySettings(t0=(0.1, 0.25), n=n, steps_per_unit=20, bootstrap_resamples=100)
    cols: dict[str, list] = {}
    for split in ("train", "test"):
        for t0 in settings.t0:
            x0 = rng.integers(0, vocab, size=(n, length))
            hit = rng.random((n, length)) < t0
            hit[:, 0] = True
            x_t = np.where(hit, (x0 + 1 + rng.integers(0, vocab - 1, size=x0.shape)) % vocab, x0)
            x_final = x0.copy() if split == "train" else np.where(hit, x_t, x0)
            entropy = np.where(x_final == x0, 0.01, 2.0) * np.ones((n, length))
            m = sequence_metrics(x0, x_t, x_final, entropy)
            m.update(split=np.array([split] * n), t0=np.full(n, t0), example_id=np.arange(n),
                     steps=np.full(n, round(t0 * settings.steps_per_unit)), x0=x0, x_t=x_t, x_final=x_final)
            for k, v in m.items():
                cols.setdefault(k, []).append(v)
    rows = {k: np.concatenate(v) for k, v in cols.items()}
    rows["original_text"] = [HOSTILE_TEXT] * len(rows["split"])
    rows["corrupted_text"] = rows["original_text"]
    rows["restored_text"] = rows["original_text"]
    summaries = summarize(rows, settings)
    gaps = gap_table(rows, settings)
    decision = settings.rule.decide(summaries, gaps)
    model = {"checkpoint": "runs/<fake>", "family": "memaudit", "weights": "ema", "vocab_size": vocab,
             "seq_len": length}
    return RecoveryResult(verdict=decision.verdict, reason=decision.reason, explanation=decision.explanation,
                          settings=settings, model=model, data={"train": "fake", "test": "fake"}, rows=rows,
                          summaries=summaries, gaps=gaps)
