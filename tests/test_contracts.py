"""Contracts of the statistics, the memory budget, the pickle policy and the noise schedules, each
against values written down by hand (textbook tables, hand-counted pairs, formulas evaluated on
paper), so that a test fails when the code computes something else (issue 25). No trained model.

The rule's thresholds are tested in tests/test_rule_bounds.py."""
from __future__ import annotations

import io
import math
import resource

import numpy as np
import pytest
import torch

from memaudit import budget
from memaudit.adapters.safe_pickle import UnsafePickle, run_unpickler
from memaudit.diffusion import CosineSchedule, GeometricSchedule, GiddSchedule, LogLinearSchedule
from memaudit.stats import (coincidences, poisson_interval, scan_statistics, training_set_comparison,
                            wilson_interval)


# ----------------------------------------------------------------------------------- coincidences
# 12 samples in planted groups: {0, 3, 7}, {1, 5}, {2, 4, 8, 9}; 6, 10 and 11 alone.
# Identical pairs, counted by hand: C(3,2) + C(2,2) + C(4,2) = 3 + 1 + 6 = 10 (duplicate samples: 2 + 1 + 3 = 6).
PLANTED_DUPLICATE_OF = [-1, -1, -1, 0, 2, 1, -1, 0, 2, 2, -1, -1]


def test_coincidences_count_identical_pairs_of_planted_groups():
    c = coincidences(PLANTED_DUPLICATE_OF, 0.95)
    assert c["colliding_pairs"] == 10
    assert c["sample_pairs"] == 66                                   # C(12, 2)
    assert c["distinct_samples"] == 6
    assert c["distinct_sequences_estimate"] == pytest.approx(6.6)   # 66 / 10


def test_a_single_large_group_is_many_pairs_not_one_repeat():
    dup = [-1] + [0] * 5 + [-1] * 4                                  # 6 equal samples: C(6, 2) = 15 pairs
    assert coincidences(dup, 0.95)["colliding_pairs"] == 15
    assert coincidences([-1] * 10, 0.95)["colliding_pairs"] == 0


def test_scan_statistics_report_pairs_and_the_duplicate_share():
    n = len(PLANTED_DUPLICATE_OF)
    s = scan_statistics(np.full(n, 1.0), PLANTED_DUPLICATE_OF, np.zeros(n, bool), np.zeros(n), vocab_size=32,
                        tau=0.3, t_eval=0.05, seed=0, resamples=50, confidence=0.95)
    assert s["colliding_pairs"] == 10 and s["duplicate_rate"] == pytest.approx(6 / 12)
    # Garwood's 95 % interval for 10 is [4.795, 18.390] (below): 66 / 18.390 and 66 / 4.795 sequences
    assert s["distinct_sequences_ci"] == pytest.approx([66 / 18.390, 66 / 4.795], rel=1e-3)


# -------------------------------------------------------------------------- textbook intervals
# Wilson score interval, 95 %, from Newcombe (1998), Statistics in Medicine 17:857, table I
# (method 3): successes, n, lower, upper.
WILSON_95 = [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]
# Garwood's exact two-sided 95 % interval for a Poisson mean given a count k (the χ² table:
# χ²(0.025; 2k)/2, χ²(0.975; 2k + 2)/2), as in standard tables of Poisson confidence limits.
GARWOOD_95 = [(0, 0.0, 3.689), (1, 0.0253, 5.572), (3, 0.619, 8.767), (10, 4.795, 18.390)]


@pytest.mark.parametrize("k,n,lo,hi", WILSON_95)
def test_wilson_interval_matches_the_textbook(k, n, lo, hi):
    got = wilson_interval(k, n, 0.95)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_basin_return_rate_ci_is_the_95_percent_wilson_interval():
    """The basin evidence's CI (scan_statistics → Evidence.basin_return_rate_ci) at the scan's
    confidence: 15 of 148 samples return whole (agreement 1.0), the rest partly."""
    from memaudit.stats import basin_statistics

    agreement = [1.0] * 15 + [0.75] * 133
    b = basin_statistics(agreement, 0.95, len(agreement))
    assert b["basin_return_rate"] == pytest.approx(15 / 148)
    assert b["basin_return_rate_ci"] == pytest.approx([0.0624, 0.1605], abs=1e-4)
    n = len(agreement)
    s = scan_statistics(np.full(n, 1.0), [-1] * n, np.zeros(n, bool), np.zeros(n), vocab_size=32, tau=0.3,
                        t_eval=0.05, seed=0, resamples=20, confidence=0.95, basin_agreement=agreement)
    assert s["basin_return_rate_ci"] == pytest.approx([0.0624, 0.1605], abs=1e-4)


def test_wilson_interval_edges():
    assert all(math.isnan(v) for v in wilson_interval(0, 0, 0.95))
    lo, hi = wilson_interval(10, 10, 0.95)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)      # mirror of 0/10: 1 − 0.2775


@pytest.mark.parametrize("k,lo,hi", GARWOOD_95)
def test_garwood_interval_matches_the_textbook(k, lo, hi):
    got = poisson_interval(k, 0.95)
    assert got[0] == pytest.approx(lo, abs=1e-3) and got[1] == pytest.approx(hi, abs=1e-3)


def test_garwood_interval_is_two_sided():
    # A one-sided 95 % upper bound for k = 0 would be −ln 0.05 = 2.996; two-sided it is −ln 0.025 = 3.689.
    assert poisson_interval(0, 0.95)[1] == pytest.approx(-math.log(0.025), rel=1e-6)
    assert poisson_interval(0, 0.90)[1] == pytest.approx(-math.log(0.05), rel=1e-6)


def test_garwood_interval_above_a_thousand_uses_the_same_quantiles():
    # k = 2000: χ²(0.025; 4000)/2 = 1913.30, χ²(0.975; 4002)/2 = 2089.62 (the exact χ² quantiles)
    lo, hi = poisson_interval(2000, 0.95)
    assert lo == pytest.approx(1913.30, abs=0.05) and hi == pytest.approx(2089.62, abs=0.05)


# --------------------------------------------------------------- the training-set comparison
def _stats(pairs: int, lo, hi, n: int = 256) -> dict:
    return {"colliding_pairs": pairs, "distinct_sequences_ci": [lo, hi], "n_samples": n}


def test_training_set_comparison_every_branch():
    # repeats (≥ 3 pairs), CI entirely below the training-set size: a stored subset
    assert training_set_comparison(_stats(10, 200.0, 800.0), 1000).startswith(
        "the samples come from fewer sequences (95% CI 200–800) than the 1,000 training sequences")
    # repeats, CI entirely above it
    assert training_set_comparison(_stats(10, 2000.0, 9000.0), 1000).startswith(
        "the samples repeat, but come from more sequences (≥ 2,000) than the 1,000 training sequences")
    # repeats, CI containing it (also at either edge: the comparisons are strict)
    for lo, hi in ((500.0, 2000.0), (500.0, 1000.0), (1000.0, 2000.0)):
        assert training_set_comparison(_stats(10, lo, hi), 1000).startswith(
            "consistent with drawing from the 1,000 training sequences"), (lo, hi)
    assert "–∞)" in training_set_comparison(_stats(3, 500.0, None), 1000)
    # no repeats, lower bound above the training-set size
    assert training_set_comparison(_stats(0, 5000.0, None), 1000).startswith(
        "the model produces more distinct sequences (≥ 5,000, 95%) than the 1,000 it was trained on")
    # no repeats, lower bound at or below it: too few samples to tell. A uniform draw of k samples
    # from 1000 sequences makes k(k−1)/2000 pairs on average; P(≥ 3 | λ) ≥ 0.95 needs λ ≥ 6.30:
    # k = 64 gives λ = 2.02, k = 128 gives λ = 8.13, so 128 samples (powers of two).
    for lo in (700.0, 1000.0):
        text = training_set_comparison(_stats(2, lo, None, n=64), 1000)
        assert text.startswith("64 samples cannot tell whether the samples replay the 1,000 training sequences")
        assert "about 128 samples would show repeats" in text
    # min_pairs is the repeat threshold: 2 pairs count as repeats when min_pairs = 2
    assert training_set_comparison(_stats(2, 200.0, 800.0), 1000, min_pairs=2).startswith("the samples come from fewer")


# ------------------------------------------------------------------------------ memory budget
GIB = 2**30


def fake_files(monkeypatch, files: dict[str, str]):
    """memaudit.budget reads /proc and /sys through `open`: serve these contents instead (a path
    not listed does not exist)."""
    def fake_open(path, *args, **kwargs):
        if str(path) not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[str(path)])
    monkeypatch.setattr(budget, "open", fake_open, raising=False)


def test_budget_counts_the_cgroups_current_usage(monkeypatch):
    fake_files(monkeypatch, {"/sys/fs/cgroup/memory.max": f"{4 * GIB}\n",
                             "/sys/fs/cgroup/memory.current": f"{1 * GIB}\n"})
    assert budget._cgroup_available() == 3 * GIB


def test_budget_cgroup_without_limit_or_over_it(monkeypatch):
    fake_files(monkeypatch, {"/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/memory.current": "123\n"})
    assert budget._cgroup_available() is None
    fake_files(monkeypatch, {"/sys/fs/cgroup/memory.max": f"{GIB}\n", "/sys/fs/cgroup/memory.current": f"{2 * GIB}\n"})
    assert budget._cgroup_available() == 0
    fake_files(monkeypatch, {})
    assert budget._cgroup_available() is None


def test_budget_reads_memavailable_in_kib(monkeypatch):
    fake_files(monkeypatch, {"/proc/meminfo": "MemTotal:  16000000 kB\nMemFree:  1000 kB\nMemAvailable:  8000000 kB\n"})
    assert budget._meminfo_available() == 8_000_000 * 1024


def test_budget_address_space_less_what_is_mapped(monkeypatch):
    fake_files(monkeypatch, {"/proc/self/status": "Name:\tpython\nVmPeak:\t 9999 kB\nVmSize:\t 1048576 kB\n"})
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: (4 * GIB, resource.RLIM_INFINITY))
    assert budget._address_space_available() == 3 * GIB
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert budget._address_space_available() is None


def test_budget_is_the_least_of_the_three(monkeypatch):
    fake_files(monkeypatch, {"/proc/meminfo": f"MemAvailable: {6 * GIB // 1024} kB\n",
                             "/sys/fs/cgroup/memory.max": f"{8 * GIB}\n",
                             "/sys/fs/cgroup/memory.current": f"{5 * GIB}\n",
                             "/proc/self/status": f"VmSize: {GIB // 1024} kB\n"})
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: (5 * GIB, resource.RLIM_INFINITY))
    assert budget.memory_available() == 3 * GIB                      # the cgroup: 8 − 5 GiB
    assert budget.available_memory("cpu") == 3 * GIB
    fake_files(monkeypatch, {})
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert budget.memory_available() is None and budget.available_memory("cpu") == 8 * GIB


# ----------------------------------------------------------------------------- pickle policy
# Hand-written protocol-2 pickle of builtins.bytearray(10**12): PROTO 2, GLOBAL, LONG1 of 6 bytes
# (10**12 = 0xE8D4A51000, little-endian, a zero byte keeping it positive), TUPLE1, REDUCE, STOP.
BYTEARRAY_TERABYTE = b"\x80\x02cbuiltins\nbytearray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R."
# The same in protocol 0, through the Python 2 name (mapped to builtins by the unpickler).
BYTEARRAY_TERABYTE_P0 = b"c__builtin__\nbytearray\n(I1000000000000\ntR."
BYTES_OF_A_SIZE = b"\x80\x02cbuiltins\nbytes\nJ\x00\x00\x00\x40\x85R."        # bytes(2**30)


def _no_storages(pid):
    raise AssertionError(f"no persistent ids in these pickles ({pid!r})")


def _unpickle_under_a_memory_cap(data: bytes):
    """run_unpickler under RLIMIT_AS of what is mapped now + 1 GiB, so that a policy that let the
    allocation through fails with MemoryError, never by exhausting the shared machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    cap = mapped + GIB if hard == resource.RLIM_INFINITY else min(hard, mapped + GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        return run_unpickler(data, _no_storages)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("data", [BYTEARRAY_TERABYTE, BYTEARRAY_TERABYTE_P0, BYTES_OF_A_SIZE],
                         ids=["bytearray-p2", "bytearray-p0", "bytes-p2"])
def test_pickle_allocating_by_size_is_refused(data):
    with pytest.raises(UnsafePickle, match=r"builtins\.(bytearray|bytes) with a int"):
        _unpickle_under_a_memory_cap(data)


def test_pickle_bytearray_of_small_data_still_loads():
    assert run_unpickler(b"\x80\x02cbuiltins\nbytearray\nC\x02ab\x85R.", _no_storages) == bytearray(b"ab")


# ----------------------------------------------------------------------------- noise schedules
# α_t at a few t, evaluated on paper from each published formula (values, not the code):
#   log-linear (Duo/UDLM), ε = 1e-3:  α_t = 1 − (1 − ε) t            α_0.5 = 1 − 0.999 · 0.5 = 0.5005
#   cosine (Duo), ε = 1e-3:           α_t = 1 − cos(π/2 · (1 − (1 − ε) t))
#       t = 0.5: u = π/2 · 0.5005 = 0.786183, cos u = 0.706551 → 0.293449
#       t = 0.25: u = π/2 · 0.75025 = 1.178490, cos u = 0.382321 → 0.617679
#   geometric (SEDD), σ_min = 1e-4, σ_max = 20: σ_t = σ_min^(1−t) σ_max^t, α_t = e^(−σ_t)
#       t = 0.5: σ = √(2e-3) = 0.0447214 → α = 0.956264;  t = 1: σ = 20 → α = 2.0612e-9
#   GIDD hybrid (p_u, N tokens with the mask, γ): B = 1 / (1 + (1 − p_u)/p_u · N/2),
#       c_t = B √(t^γ (1 − t)^γ), C_t = t^γ + (1 − t)^γ + (N − 2) c_t, α_t = ((1 − t)^γ − c_t) / C_t
#       p_u = 0.1, N = 10: B = 1/46.
#       γ = 1, t = 0.5:  c = 0.5/46,  α = (0.5 − 0.5/46) / (1 + 4/46) = 22.5 / 50 = 0.45
#       γ = 1, t = 0.25: c = √0.1875/46 = 0.0094133, α = 0.7405867 / 1.0753066 = 0.688721
#       γ = 2, t = 0.25: c = 0.1875/46, α = (25.875 − 0.1875) / (28.75 + 1.5) = 25.6875 / 30.25 = 0.849174
SCHEDULE_VALUES = [
    (LogLinearSchedule(eps=1e-3), 0.5, 0.5005),
    (LogLinearSchedule(eps=1e-3), 1.0, 1e-3),
    (CosineSchedule(eps=1e-3), 0.0, 1.0),
    (CosineSchedule(eps=1e-3), 0.25, 0.617679),
    (CosineSchedule(eps=1e-3), 0.5, 0.293449),
    (GeometricSchedule(1e-4, 20.0), 0.5, 0.956264),
    (GeometricSchedule(1e-4, 20.0), 1.0, 2.0612e-9),
    (GiddSchedule(p_uniform=0.1, vocab_size=10), 0.5, 0.45),
    (GiddSchedule(p_uniform=0.1, vocab_size=10), 0.25, 0.688721),
    (GiddSchedule(p_uniform=0.1, vocab_size=10, gamma=2.0), 0.25, 0.849174),
]


@pytest.mark.parametrize("schedule,t,alpha", SCHEDULE_VALUES,
                         ids=[f"{s.name}-{t}-{i}" for i, (s, t, _a) in enumerate(SCHEDULE_VALUES)])
def test_schedule_alpha_matches_the_published_formula(schedule, t, alpha):
    got = float(schedule.alpha(torch.tensor([t], dtype=torch.float64))[0])
    assert got == pytest.approx(alpha, rel=2e-5, abs=1e-9)
    sigma = float(schedule.sigma(torch.tensor([t], dtype=torch.float64))[0])
    assert sigma == pytest.approx(-math.log(alpha), rel=1e-4, abs=1e-7)     # σ_t = −ln α_t


@pytest.mark.parametrize("schedule", [s for s, _t, _a in SCHEDULE_VALUES[::2]], ids=lambda s: s.name)
def test_schedule_derivative_is_the_formulas(schedule):
    """dα/dt against a central difference of the checked-in values' formula (the code's α)."""
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    h = 1e-3                                       # the geometric schedule computes in float32
    numeric = (schedule.alpha(t + h).double() - schedule.alpha(t - h).double()) / (2 * h)
    assert torch.allclose(schedule.dalpha_dt(t).double(), numeric, rtol=2e-3, atol=1e-5)


# ---------------------------------------------------------------------------- batch planning
def test_sizes_parse_to_bytes():
    assert budget.parse_size("4GiB") == 4 * GIB and budget.parse_size("500MB") == 500 * 10**6
    assert budget.parse_size(" 2.5g ") == int(2.5e9) and budget.parse_size("123456") == 123456
    assert budget.parse_size("1kib") == 1024 and budget.parse_size(None) is None and budget.parse_size(7) == 7
    for bad in ("4 parsecs", "GiB", "-1GB", "0"):
        with pytest.raises(budget.BudgetError):
            budget.parse_size(bad)
    assert budget.parse_batch_size("auto") is None and budget.parse_batch_size(None) is None
    assert budget.parse_batch_size(" AUTO ") is None and budget.parse_batch_size("8") == 8
    for bad in ("0", "-2", "eight"):
        with pytest.raises(budget.BudgetError):
            budget.parse_batch_size(bad)
    assert budget.fmt_bytes(3 * GIB) == "3.0 GiB" and budget.fmt_bytes(1536 * 1024) == "1.5 MiB"
    assert budget.fmt_bytes(2048) == "2.0 KiB" and budget.fmt_bytes(100) == "100 B"


def _fake_denoiser(vocab=1000, length=100, hidden=64, heads=4, device="cpu"):
    from types import SimpleNamespace
    config = SimpleNamespace(hidden_size=hidden, n_heads=heads)
    return SimpleNamespace(vocab_size=vocab, seq_len=length, device=device, model=SimpleNamespace(config=config))


def test_bytes_per_sequence_by_hand():
    # 4 bytes × L × (4 V + 14 d + heads × L) = 4 × 100 × (4,000 + 896 + 400) = 2,118,400
    assert budget.bytes_per_sequence(1000, 100, 64, 4) == 2_118_400
    assert budget.model_shape(_fake_denoiser()) == (64, 4)
    from types import SimpleNamespace
    assert budget.model_shape(SimpleNamespace()) == (1024, 16)              # the conservative guess


def test_plan_batch_by_hand():
    den = _fake_denoiser()                                   # 2,118,400 bytes per sequence
    per = 2_118_400
    plan = budget.plan_batch(den, None, max_memory=10 * per)
    assert (plan.batch_size, plan.per_sequence, plan.budget, plan.chosen) == (10, per, 10 * per, "auto")
    assert "batch 10 (auto" in plan.describe()
    assert budget.plan_batch(den, None, max_memory=10 * per + per - 1).batch_size == 10          # floor
    assert budget.plan_batch(den, None, max_memory=100 * per).batch_size == 40    # CPU: 4,096 tokens // L = 100 → 40
    assert budget.plan_batch(den, None, max_memory=100 * per, work=7).batch_size == 7
    assert budget.plan_batch(_fake_denoiser(length=8), None, max_memory=10**12).batch_size == budget.MAX_AUTO_BATCH
    given = budget.plan_batch(den, 3, max_memory=3 * per)
    assert (given.batch_size, given.chosen) == (3, "given")
    with pytest.raises(budget.BudgetError, match="≤ 3"):
        budget.plan_batch(den, 4, max_memory=3 * per + 1)
    with pytest.raises(budget.BudgetError, match="not even one sequence"):
        budget.plan_batch(den, 1, max_memory=per - 1)
    with pytest.raises(budget.BudgetError, match="one sequence needs"):
        budget.plan_batch(den, None, max_memory=per - 1)


def test_plan_batch_default_budget_is_half_the_available(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda device: 20 * 2_118_400)
    plan = budget.plan_batch(_fake_denoiser(), None, max_memory=None)
    assert plan.budget == 10 * 2_118_400 and plan.batch_size == 10


def test_budget_reads_the_address_space_limit(monkeypatch):
    asked = []
    fake_files(monkeypatch, {"/proc/self/status": "VmSize: 1024 kB\n"})
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: asked.append(which) or (GIB, resource.RLIM_INFINITY))
    assert budget._address_space_available() == GIB - 1024 * 1024 and asked == [resource.RLIMIT_AS]


def test_available_memory_defaults_to_the_cpu_and_asks_the_gpu_for_its_free_memory(monkeypatch):
    fake_files(monkeypatch, {"/proc/meminfo": f"MemAvailable: {2 * GIB // 1024} kB\n"})
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert budget.available_memory() == 2 * GIB                       # the default device is the CPU
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: asked.append(device) or (3 * GIB, 80 * GIB))
    assert budget.available_memory("cuda") == 3 * GIB and asked == [torch.device("cuda")]


def test_budget_edges_and_messages(monkeypatch):
    """The edges of the budget's parsing and planning, and what its messages say (mutmut survivors)."""
    assert budget.parse_size("1") == 1 and budget.parse_batch_size("1") == 1
    with pytest.raises(budget.BudgetError, match=r"--max-memory: cannot read 'lots' as a size"):
        budget.parse_size("lots")
    with pytest.raises(budget.BudgetError, match=r"--max-memory must be positive \(got '0'\)"):
        budget.parse_size("0")
    with pytest.raises(budget.BudgetError, match=r"--batch-size must be 'auto' or a positive integer \(got 'x'\)"):
        budget.parse_batch_size("x")
    with pytest.raises(budget.BudgetError, match=r"--batch-size must be ≥ 1 \(got 0\)"):
        budget.parse_batch_size("0")
    assert budget.fmt_bytes(GIB) == "1.0 GiB" and budget.fmt_bytes(1024) == "1.0 KiB"
    fake_files(monkeypatch, {"/proc/self/status": f"VmSize: {4 * GIB // 1024} kB\n"})
    monkeypatch.setattr(budget.resource, "getrlimit", lambda which: (GIB, resource.RLIM_INFINITY))
    assert budget._address_space_available() == 0                         # already past the limit
    per = 2_118_400
    den = _fake_denoiser()
    assert budget.plan_batch(den, None, max_memory=per).batch_size == 1   # exactly one sequence fits
    assert budget.plan_batch(den, None, max_memory=100 * per, work=50).batch_size == 40   # the CPU cap binds
    assert budget.plan_batch(_fake_denoiser(length=5000), None, max_memory=10**15).batch_size == 1
    given = budget.plan_batch(den, 3, max_memory=3 * per)
    assert (given.per_sequence, given.budget) == (per, 3 * per)
    with pytest.raises(budget.BudgetError, match=r"use --batch-size auto or ≤ 3 \)?$|≤ 3$") as e:
        budget.plan_batch(den, 4, max_memory=3 * per + 1)
    assert "(--max-memory)" in str(e.value) and "needs about 8.1 MiB" in str(e.value)
    with pytest.raises(budget.BudgetError, match=r"use --batch-size auto or ≤ 1$"):
        budget.plan_batch(den, 2, max_memory=per)
    asked = []
    monkeypatch.setattr(budget, "available_memory", lambda device: asked.append(device) or per)
    with pytest.raises(budget.BudgetError, match=r"\(50% of the available memory\)"):
        budget.plan_batch(den, None, max_memory=None)
    assert asked == ["cpu"]
