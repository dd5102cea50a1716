"""The diffusion estimator on random walks and on vibrating atoms with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.diffusion import ballistic_end, estimate_diffusion
from matdx.kernels.msd import mean_squared_displacement


def random_walk(d: float, n_atoms: int, n_frames: int, dt: float, seed: int) -> np.ndarray:
    """Brownian positions (Å) with diffusion coefficient d (Å²/fs), frames dt fs apart."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, np.sqrt(2 * d * dt), size=(n_frames, n_atoms, 3))
    steps[0] = 0.0
    return np.cumsum(steps, axis=0)


def test_random_walk_error_bar_covers_the_true_value():
    """Over 40 independent walks, |D - D_true| < 2 σ in about 95 % of them: the error bar
    reflects the time correlation of the MSD (an OLS error bar would be far too small)."""
    d_true, misses, ratios = 2e-4, 0, []
    for seed in range(40):
        positions = random_walk(d_true, 64, 60, 40.0, seed)
        msd = mean_squared_displacement(positions, 40.0)
        estimate = estimate_diffusion(msd.time, msd.msd, 64)
        assert estimate.detected
        misses += abs(estimate.D - d_true) > 2 * estimate.D_err
        ratios.append(estimate.D_err / d_true)
    assert misses <= 6
    assert 0.01 < np.median(ratios) < 0.3


def test_vibrating_atoms_show_no_diffusion_and_an_upper_bound():
    """Atoms bound to lattice sites (an Ornstein-Uhlenbeck process): the MSD is a plateau."""
    rng = np.random.default_rng(3)
    n_frames, n_atoms = 60, 256
    x = np.zeros((n_frames, n_atoms, 3))
    for k in range(1, n_frames):
        x[k] = 0.3 * x[k - 1] + rng.normal(0.0, 0.1, size=(n_atoms, 3))
    msd = mean_squared_displacement(x, 40.0)
    estimate = estimate_diffusion(msd.time, msd.msd, n_atoms)
    assert not estimate.detected
    assert estimate.upper_bound is not None and estimate.upper_bound > 0
    assert estimate.describe().startswith("no diffusion detected, D < ")
    assert abs(estimate.exponent) < 0.2


def test_ballistic_regime_is_found_and_the_window_starts_after_it():
    t = np.arange(0, 2000.0, 10.0)
    tau = 150.0  # fs: ballistic below, diffusive above (Langevin MSD)
    msd = 6 * 1e-3 * tau * (t / tau - 1 + np.exp(-t / tau)) * 10
    end = ballistic_end(t, msd)
    assert tau <= end <= 3 * tau  # the local exponent falls below 1.5 at about 2 tau
    estimate = estimate_diffusion(t, msd, 100)
    assert estimate.fit_window[0] >= end
    early = estimate_diffusion(t, msd, 100, fit_window=(10.0, 60.0))
    assert any("inside the ballistic regime" in note for note in early.notes)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n_atoms"):
        estimate_diffusion(np.arange(10.0), np.arange(10.0), 0)
    with pytest.raises(ValueError, match="lag times"):
        estimate_diffusion(np.arange(10.0), np.arange(10.0), 5, fit_window=(8.5, 9.5))


def test_a_run_too_short_past_its_ballistic_regime_says_so():
    """12 lags of 10 fs whose MSD is ballistic until 40 fs leave 2 lags to fit: the kernel
    raises FitWindowTooShort (a ValueError), which the MD analysis reports as a note."""
    from matdx.kernels.diffusion import FitWindowTooShort, estimate_diffusion

    t = np.arange(12) * 10.0
    msd = np.where(t <= 40.0, 1e-3 * t**2, 1.6 + 0.01 * (t - 40.0))
    with pytest.raises(FitWindowTooShort, match="at least 3 are needed"):
        estimate_diffusion(t, msd, n_atoms=32)
