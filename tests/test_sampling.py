"""The reverse-process loop: time grids, determinism, the noise-removal step."""
import pytest
import torch

from memaudit.denoiser import Denoiser
from memaudit.diffusion import T_MIN, LogLinearSchedule
from memaudit.model import DDiT, DDiTConfig
from memaudit.sampling import generate, time_grid


@pytest.mark.parametrize("kind", ["linear", "quadratic"])
def test_time_grid_runs_from_start_to_t_min(kind):
    grid = time_grid(0.5, 10, kind=kind)
    assert grid.shape == (11,) and grid.dtype == torch.float64
    assert grid[0].item() == pytest.approx(0.5) and grid[-1].item() == pytest.approx(T_MIN)
    assert (grid[1:] < grid[:-1]).all()


def test_quadratic_grid_spends_more_steps_near_zero():
    linear, quadratic = time_grid(1.0, 32), time_grid(1.0, 32, kind="quadratic")
    assert (quadratic < 0.1).sum() > 2 * (linear < 0.1).sum()
    with pytest.raises(ValueError):
        time_grid(1.0, 8, kind="cosine")
    with pytest.raises(ValueError):
        time_grid(1.0, 0)


def tiny_denoiser(seed=0):
    torch.manual_seed(seed)
    model = DDiT(DDiTConfig(vocab_size=7, seq_len=5, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return Denoiser(model=model, schedule=LogLinearSchedule(), vocab_size=7, seq_len=5)


@pytest.mark.parametrize("grid", ["linear", "quadratic"])
def test_generate_is_deterministic_under_a_seed(grid):
    denoiser = tiny_denoiser()
    a = generate(denoiser, 9, steps=6, seed=3, batch_size=4, grid=grid, show_progress=False)
    b = generate(denoiser, 9, steps=6, seed=3, batch_size=4, grid=grid, show_progress=False)
    c = generate(denoiser, 9, steps=6, seed=4, batch_size=4, grid=grid, show_progress=False)
    assert a.shape == (9, 5) and a.dtype == torch.long and ((a >= 0) & (a < 7)).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
