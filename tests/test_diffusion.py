"""The diffusion math, checked against brute-force enumeration on tiny vocabularies."""
import itertools

import pytest
import torch

from memaudit import diffusion as D

V = 4


def q_step(a: float, vocab: int) -> torch.Tensor:
    """Transition matrix M[x_prev, x_next] of 'keep with prob a, else uniform over all V'."""
    return a * torch.eye(vocab, dtype=torch.float64) + (1 - a) / vocab


def brute_posterior(x_t: int, x0_probs: torch.Tensor, a_t: float, a_s: float) -> torch.Tensor:
    """p(x_s | x_t) by enumeration of Bayes' rule, with x_0 ~ x̂, x_s ~ q(· | x_0), x_t ~ q(· | x_s).

    For a one-hot x̂ this is the true posterior q(x_s | x_t, x_0)."""
    vocab = x0_probs.numel()
    m_s = q_step(a_s, vocab)            # q(x_s | x_0)
    m_ts = q_step(a_t / a_s, vocab)     # q(x_t | x_s)
    joint = torch.zeros(vocab, dtype=torch.float64)  # p(x_s, x_t) for the observed x_t
    for x0 in range(vocab):
        for xs in range(vocab):
            joint[xs] += x0_probs[x0] * m_s[x0, xs] * m_ts[xs, x_t]
    return joint / joint.sum()


@pytest.mark.parametrize("a_t,a_s", [(0.3, 0.6), (0.9, 0.95), (0.001, 0.01), (0.5, 0.9999)])
def test_posterior_equals_bayes_by_enumeration(a_t, a_s):
    gen = torch.Generator().manual_seed(0)
    x0_probs = torch.softmax(torch.randn(2, 3, V, generator=gen, dtype=torch.float64) * 2, -1)
    x_t = torch.randint(0, V, (2, 3), generator=gen)
    post = D.posterior(x_t, x0_probs, torch.full((2,), a_t, dtype=torch.float64),
                       torch.full((2,), a_s, dtype=torch.float64))
    assert torch.allclose(post.sum(-1), torch.ones(2, 3, dtype=torch.float64), atol=1e-12)
    for b, i in itertools.product(range(2), range(3)):
        expected = brute_posterior(int(x_t[b, i]), x0_probs[b, i], a_t, a_s)
        assert torch.allclose(post[b, i], expected, atol=1e-12)


def test_final_posterior_is_posterior_with_alpha_s_one():
    gen = torch.Generator().manual_seed(1)
    x0_probs = torch.softmax(torch.randn(1, 3, V, generator=gen, dtype=torch.float64), -1)
    x_t = torch.randint(0, V, (1, 3), generator=gen)
    a_t = torch.tensor([0.7], dtype=torch.float64)
    final = D.final_posterior(x_t, x0_probs, a_t)
    general = D.posterior(x_t, x0_probs, a_t, torch.ones(1, dtype=torch.float64))
    assert torch.allclose(final, general, atol=1e-12)


def test_corruption_frequencies_match_alpha():
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    x0 = torch.zeros(1, n, dtype=torch.long)
    alpha = 0.3
    x_t = D.corrupt(x0, torch.tensor([alpha]), V, generator=gen)
    # P(x_t = x0) = α + (1 − α)/V; each other token (1 − α)/V.
    expected_same = alpha + (1 - alpha) / V
    freq = torch.bincount(x_t[0], minlength=V).double() / n
    tol = 4 * (expected_same * (1 - expected_same) / n) ** 0.5
    assert abs(freq[0].item() - expected_same) < tol
    for v in range(1, V):
        assert abs(freq[v].item() - (1 - alpha) / V) < 4 * ((1 - alpha) / V / n) ** 0.5


def test_schedule_values():
    s = D.LogLinearSchedule()
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(s.alpha(t), torch.tensor([1.0, 1 - 0.999 * 0.5, 1e-3], dtype=torch.float64))
    assert torch.allclose(s.sigma(t), -torch.log(s.alpha(t)))
    assert torch.allclose(s.dalpha_dt(t), torch.full_like(t, -0.999))



# Every schedule memaudit knows, as the plain data its adapter builds it from.
SCHEDULE_DICTS = {
    "loglinear": {"name": "loglinear", "eps": 1e-3},
    "cosine": {"name": "cosine", "eps": 1e-3},
    "geometric": {"name": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0},
    "gidd-hybrid": {"name": "gidd-hybrid", "p_uniform": 0.1, "vocab_size": 50},
}


@pytest.mark.parametrize("name", sorted(SCHEDULE_DICTS))
def test_every_schedule_implements_the_protocol_and_round_trips(name):
    s = D.schedule_from_dict(SCHEDULE_DICTS[name])
    assert isinstance(s, D.Schedule) and s.name == name
    again = D.schedule_from_dict({**s.to_dict(), **({"vocab_size": 50} if name == "gidd-hybrid" else {})})
    assert again == s
    t = torch.linspace(0.05, 0.95, 7)
    alpha, sigma, dalpha = s.alpha(t), s.sigma(t), s.dalpha_dt(t)
    assert alpha.dtype == sigma.dtype == dalpha.dtype == torch.float32
    assert ((alpha > 0) & (alpha <= 1)).all() and (dalpha < 0).all()
    assert torch.allclose(sigma, -torch.log(alpha), rtol=1e-4, atol=1e-6)
    h = 1e-3  # dα/dt against a central difference in float64
    t64 = t.double()
    numeric = (s.alpha(t64 + h).double() - s.alpha(t64 - h).double()) / (2 * h)
    assert torch.allclose(dalpha.double(), numeric, rtol=2e-3, atol=1e-4)
    assert 0 < s.eps < 1


def test_schedule_lookup_refuses_unknown_names_and_bad_fields():
    assert D.schedule_from_dict(None) == D.LogLinearSchedule()
    assert D.schedule_from_dict({"name": "log-linear", "eps": "0.01"}) == D.LogLinearSchedule(eps=0.01)
    with pytest.raises(ValueError, match=r"schedule\.name: unsupported noise schedule 'sqrt'.*cosine"):
        D.schedule_from_dict({"name": "sqrt"})
    with pytest.raises(ValueError, match=r"unsupported noise schedule \['a'\]"):
        D.schedule_from_dict({"name": ["a"]})
    with pytest.raises(ValueError, match="schedule must be a mapping"):
        D.schedule_from_dict("loglinear")
    with pytest.raises(ValueError, match=r"noise\.eps must be a number in \(0, 1\)"):
        D.schedule_from_dict({"name": "cosine", "eps": 0}, where="noise")
    with pytest.raises(ValueError, match=r"0 < noise\.sigma_min < noise\.sigma_max <= 100"):
        D.schedule_from_dict({"name": "geometric", "sigma_min": 2, "sigma_max": 1}, where="noise")
    with pytest.raises(ValueError, match=r"noise\.sigma_max must be a finite number"):
        D.schedule_from_dict({"name": "geometric", "sigma_max": "inf"}, where="noise")
    with pytest.raises(ValueError, match=r"schedule\.vocab_size must be an integer"):
        D.schedule_from_dict({"name": "gidd-hybrid", "p_uniform": 0.5})
    with pytest.raises(ValueError, match=r"schedule\.p_uniform must be a probability"):
        D.schedule_from_dict({"name": "gidd-hybrid", "p_uniform": 0, "vocab_size": 9})


def test_denoiser_schedule_is_typed_as_the_protocol():
    import typing

    from memaudit.denoiser import Denoiser

    assert typing.get_type_hints(Denoiser)["schedule"] is D.Schedule

def discrete_kl_rate(x0: int, x_t: int, x0_probs: torch.Tensor, t: float, dt: float,
                     sched: D.LogLinearSchedule) -> float:
    """KL(q(x_s | x_t, x0) ‖ p_θ(x_s | x_t)) / dt with s = t − dt, by enumeration."""
    a_t = float(sched.alpha(torch.tensor(t, dtype=torch.float64)))
    a_s = float(sched.alpha(torch.tensor(t - dt, dtype=torch.float64)))
    onehot = torch.zeros(V, dtype=torch.float64)
    onehot[x0] = 1
    q = brute_posterior(x_t, onehot, a_t, a_s)
    p = brute_posterior(x_t, x0_probs, a_t, a_s)
    return float((q * (q / p).log()).sum()) / dt


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_nelbo_is_continuous_time_limit_of_kl(t):
    sched = D.LogLinearSchedule()
    gen = torch.Generator().manual_seed(3)
    x0_probs = torch.softmax(torch.randn(V, generator=gen, dtype=torch.float64), -1)
    alpha = sched.alpha(torch.tensor([t], dtype=torch.float64))
    dalpha = sched.dalpha_dt(torch.tensor([t], dtype=torch.float64))
    for x0, x_t in itertools.product(range(V), range(V)):
        loss = D.nelbo_per_token(x0_probs.log()[None, None], torch.tensor([[x0]]), torch.tensor([[x_t]]),
                                 alpha, dalpha)
        rate = discrete_kl_rate(x0, x_t, x0_probs, t, 1e-6, sched)
        assert loss.item() == pytest.approx(rate, rel=1e-3, abs=1e-6)


def test_nelbo_nonnegative_finite_and_minimal_at_truth():
    sched = D.LogLinearSchedule()
    gen = torch.Generator().manual_seed(4)
    B, L = 64, 3
    x0 = torch.randint(0, V, (B, L), generator=gen)
    t = D.sample_times(B, generator=gen).double()
    x_t = D.corrupt(x0, sched.alpha(t), V, generator=gen)
    truth = torch.nn.functional.one_hot(x0, V).double() * (1 - 1e-9 * V) + 1e-9
    random_pred = torch.softmax(torch.randn(B, L, V, generator=gen, dtype=torch.float64), -1)
    loss_truth = D.nelbo_per_token(truth.log(), x0, x_t, sched.alpha(t), sched.dalpha_dt(t))
    loss_random = D.nelbo_per_token(random_pred.log(), x0, x_t, sched.alpha(t), sched.dalpha_dt(t))
    assert torch.isfinite(loss_random).all() and torch.isfinite(loss_truth).all()
    assert (loss_random >= -1e-9).all()
    assert (loss_truth >= -1e-9).all()
    assert (loss_truth <= loss_random + 1e-9).all()
    assert loss_truth.mean() < 1e-3 < loss_random.mean()
    # float32 path stays finite near the smallest training time
    t_small = torch.full((B,), 1e-3)
    x_small = D.corrupt(x0, sched.alpha(t_small), V, generator=gen)
    loss32 = D.nelbo_per_token(random_pred.float().log(), x0, x_small, sched.alpha(t_small),
                               sched.dalpha_dt(t_small))
    assert torch.isfinite(loss32).all() and (loss32 >= -1e-3).all()


def test_antithetic_times_cover_range():
    gen = torch.Generator().manual_seed(5)
    t = D.sample_times(8, t_min=1e-3, generator=gen)
    assert ((t >= 1e-3) & (t <= 1)).all()
    # one sample per stratum of width 1/8
    strata = torch.sort(((t - 1e-3) / (1 - 1e-3) * 8).floor()).values
    assert strata.unique().numel() == 8


def draws_for(n_tokens: int, vocab: int, seed: int) -> D.StepDraws:
    g = torch.Generator().manual_seed(seed)
    return D.StepDraws(torch.rand(1, n_tokens, generator=g, dtype=torch.float64),
                       torch.rand(1, n_tokens, generator=g, dtype=torch.float32),
                       torch.randint(0, vocab, (1, n_tokens), generator=g))




@pytest.mark.parametrize("a_t,a_s", [(0.4, 0.6), (0.05, 0.1), (0.95, 0.99), (0.7, None)])
def test_lean_step_draws_follow_the_exact_posterior(a_t, a_s):
    """The mixture sampler (no [B, L, V] posterior) against the dense posterior, by a chi-square
    test at the 0.1 % level, on many independent draws of one token (fixed seeds)."""
    gen = torch.Generator().manual_seed(6)
    x0_probs = torch.softmax(torch.randn(1, 1, V, generator=gen) * 2, -1)          # float32
    x_t = torch.randint(0, V, (1, 1), generator=gen)
    n = 40_000
    probs_rep = x0_probs.expand(1, n, V).contiguous()
    xt_rep = x_t.expand(1, n).contiguous()
    at = torch.tensor([a_t], dtype=torch.float64)
    draws = draws_for(n, V, seed=7)
    if a_s is None:
        drawn = D.noise_removal_step(xt_rep, probs_rep, at, "ancestral", draws=draws)
        exact = D.final_posterior(x_t, x0_probs.double(), at)[0, 0]
    else:
        as_ = torch.tensor([a_s], dtype=torch.float64)
        drawn = D.reverse_step(xt_rep, probs_rep, at, as_, draws)
        exact = D.posterior(x_t, x0_probs.double(), at, as_)[0, 0]
    counts = torch.bincount(drawn.flatten(), minlength=V).double()
    expected = exact * n
    statistic = float(((counts - expected) ** 2 / expected).sum())
    # χ² with V − 1 = 3 degrees of freedom: P(χ² > 16.27) = 0.001
    assert statistic < 16.27, (counts / n, exact)


@pytest.mark.parametrize("seed", range(5))
def test_lean_greedy_steps_equal_the_dense_argmax(seed):
    gen = torch.Generator().manual_seed(seed)
    vocab = 3 + seed
    x0_probs = torch.softmax(torch.randn(4, 6, vocab, generator=gen) * 3, -1)      # float32
    x_t = torch.randint(0, vocab, (4, 6), generator=gen)
    a_t = torch.rand(4, generator=gen, dtype=torch.float64) * 0.9
    a_s = a_t + (1 - a_t) * torch.rand(4, generator=gen, dtype=torch.float64)
    dense = D.posterior(x_t, x0_probs.double(), a_t, a_s).argmax(-1)
    assert torch.equal(D.reverse_step(x_t, x0_probs, a_t, a_s), dense)
    dense_final = D.final_posterior(x_t, x0_probs.double(), a_t).argmax(-1)
    assert torch.equal(D.noise_removal_step(x_t, x0_probs, a_t, "argmax"), dense_final)
    # exact ties (a flat x̂, as an untrained network gives) break to the lower index, as argmax does
    flat = torch.full((4, 6, vocab), 1.0 / vocab)
    assert torch.equal(D.reverse_step(x_t, flat, a_t, a_s), D.posterior(x_t, flat.double(), a_t, a_s).argmax(-1))


def test_posterior_weights_are_the_dense_posterior_parts():
    gen = torch.Generator().manual_seed(3)
    x0_probs = torch.softmax(torch.randn(2, 5, V, generator=gen), -1).double()
    x_t = torch.randint(0, V, (2, 5), generator=gen)
    a_t, a_s = torch.tensor([0.3, 0.8], dtype=torch.float64), torch.tensor([0.5, 0.9], dtype=torch.float64)
    w_stay, w_model = D.posterior_weights(x_t, x0_probs, a_t, a_s)
    w_uniform = 1 - w_stay - w_model
    rebuilt = (w_model[..., None] * x0_probs + (w_uniform / V)[..., None]
               + w_stay[..., None] * torch.nn.functional.one_hot(x_t, V))
    assert torch.allclose(rebuilt, D.posterior(x_t, x0_probs, a_t, a_s), atol=1e-12)
    assert (w_uniform >= 0).all()


def test_noise_removal_modes_and_entropy():
    gen = torch.Generator().manual_seed(6)
    x0_probs = torch.softmax(torch.randn(3, 5, V, generator=gen) * 3, -1)
    x_t = torch.randint(0, V, (3, 5), generator=gen)
    a_t = torch.full((3,), 0.4, dtype=torch.float64)
    assert torch.equal(D.noise_removal_step(x_t, x0_probs, a_t, "greedy"), x0_probs.argmax(-1))
    with pytest.raises(ValueError):
        D.noise_removal_step(x_t, x0_probs, a_t, "bogus")
    with pytest.raises(ValueError):
        D.noise_removal_step(x_t, x0_probs, a_t, "ancestral")   # no draws
    uniform = torch.full((2, V), 1.0 / V).log()
    assert torch.allclose(D.entropy(uniform), torch.full((2,), torch.log(torch.tensor(float(V)))))
    delta = torch.tensor([[0.0, float("-inf"), float("-inf"), float("-inf")]])
    assert D.entropy(delta).item() == 0.0


def test_vocabulary_work_in_row_chunks_equals_the_whole_tensor_forms(monkeypatch):
    """Entropy, the greedy choice and the in-place log-softmax run over row chunks (so that no
    second [B, L, V] tensor is built at a released model's size); chunks of 3 rows must give
    exactly what the whole-tensor forms give, −inf entries and NaN propagation included."""
    gen = torch.Generator().manual_seed(11)
    vocab = 7
    logits = torch.randn(4, 5, vocab, generator=gen) * 3
    logits[0, 0, 2] = float("-inf")
    whole_log_probs = torch.log_softmax(logits, -1)
    monkeypatch.setattr(D, "CHUNK_BYTES", 3 * vocab * 4)          # 3 rows per chunk: 7 chunks
    assert len(list(D.row_chunks(logits))) == 7
    assert torch.equal(D.log_softmax_(logits.clone()), whole_log_probs)
    probs = whole_log_probs.exp()
    dense_entropy = -torch.where(probs == 0, torch.zeros_like(probs), probs * whole_log_probs).sum(-1)
    assert torch.equal(D.entropy(whole_log_probs), dense_entropy)
    with_nan = whole_log_probs.clone()
    with_nan[3, 4, 1] = float("nan")
    assert torch.isnan(D.entropy(with_nan)[3, 4]) and not torch.isnan(D.entropy(with_nan)[:3]).any()
    x_t = torch.randint(0, vocab, (4, 5), generator=gen)
    a_t = torch.full((4,), 0.3, dtype=torch.float64)
    a_s = torch.full((4,), 0.6, dtype=torch.float64)
    assert torch.equal(D.reverse_step(x_t, probs, a_t, a_s), D.posterior(x_t, probs.double(), a_t, a_s).argmax(-1))


def test_only_tokens_that_pick_the_model_part_are_drawn_from_it(monkeypatch):
    """sample_mixture draws from x̂ only where the `part` draw lands in the x̂ part; elsewhere it
    keeps x_t or takes the uniform token, and when no token picks x̂ nothing is drawn from it."""
    x_t = torch.tensor([[0, 1, 2, 3]])
    w_stay = torch.full((1, 4), 0.5, dtype=torch.float64)
    w_model = torch.full((1, 4), 0.3, dtype=torch.float64)
    x0_probs = torch.zeros(1, 4, V)
    x0_probs[..., 3] = 1.0                                          # x̂ = δ(3) everywhere
    drawn_rows = []
    real_draw_from = D.draw_from
    monkeypatch.setattr(D, "draw_from", lambda probs, within: drawn_rows.append(probs.shape[0])
                        or real_draw_from(probs, within))
    draws = D.StepDraws(torch.tensor([[0.1, 0.6, 0.9, 0.7]], dtype=torch.float64), torch.rand(1, 4),
                        torch.tensor([[2, 2, 1, 0]]))
    assert D.sample_mixture(x_t, x0_probs, w_stay, w_model, draws).tolist() == [[0, 3, 1, 3]]
    assert drawn_rows == [2]                                        # tokens 1 and 3 only
    nowhere = D.StepDraws(torch.tensor([[0.1, 0.2, 0.9, 0.95]], dtype=torch.float64), torch.rand(1, 4),
                          torch.tensor([[2, 2, 1, 0]]))
    assert D.sample_mixture(x_t, x0_probs, w_stay, w_model, nowhere).tolist() == [[0, 1, 1, 0]]
    assert drawn_rows == [2]                                        # no draw from x̂ at all
