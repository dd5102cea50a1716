"""MSD (FFT, all origins) against the double loop; diffusion of a random walk."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.cells import wrap_positions
from matdx.kernels.msd import diffusion_coefficient, mean_squared_displacement
from tests.kernels.reference import msd_direct, triclinic_cell


def _walk(rng, n_frames, n_atoms, d_true, dt, origin=0.0):
    """Gaussian random walk with <dx^2> = 2 D dt per axis and step."""
    steps = rng.normal(scale=np.sqrt(2 * d_true * dt), size=(n_frames, n_atoms, 3))
    steps[0] = 0.0
    return origin + np.cumsum(steps, axis=0)


def test_matches_double_loop_per_species():
    rng = np.random.default_rng(31)
    x = _walk(rng, 150, 40, 0.3, 1.0, origin=rng.normal(scale=50.0, size=(40, 3)))
    species = rng.choice(["Li", "O"], 40)
    res = mean_squared_displacement(x, 0.5, species)
    np.testing.assert_allclose(res.msd, msd_direct(x), rtol=1e-10, atol=1e-12)
    for label in ("Li", "O"):
        np.testing.assert_allclose(
            res.species_msd[label], msd_direct(x[:, species == label]), rtol=1e-10, atol=1e-12
        )
    np.testing.assert_allclose(res.time, np.arange(150) * 0.5)
    assert res.msd[0] == pytest.approx(0.0, abs=1e-10)


def test_blocks_are_disjoint_subsets():
    rng = np.random.default_rng(32)
    x = _walk(rng, 60, 23, 0.3, 1.0)
    species = np.array([1] * 8 + [2] * 15)
    res = mean_squared_displacement(x, 1.0, species, n_blocks=3)
    li = np.flatnonzero(species == 2)
    np.testing.assert_allclose(res.species_blocks[2][1], msd_direct(x[:, li[1::3]]), rtol=1e-10)
    # The total blocks pool both species' subsets.
    members = np.concatenate([np.flatnonzero(species == 1)[0::3], li[0::3]])
    np.testing.assert_allclose(res.blocks[0], msd_direct(x[:, members]), rtol=1e-10)


def test_unwrapping_a_wrapped_triclinic_trajectory():
    rng = np.random.default_rng(33)
    cell = triclinic_cell(rng)
    x = _walk(rng, 200, 30, 0.5, 1.0, origin=rng.random((30, 3)) @ cell)
    wrapped = wrap_positions(x, cell)
    assert np.abs(wrapped - x).max() > 5.0  # atoms did cross the boundaries
    res = mean_squared_displacement(wrapped, 1.0, cell=cell)
    np.testing.assert_allclose(res.msd, msd_direct(x), rtol=1e-9, atol=1e-9)


def test_random_walk_diffusion_within_error_bar():
    rng = np.random.default_rng(34)
    d_true, dt = 0.05, 2.0
    x = _walk(rng, 400, 500, d_true, dt)
    res = mean_squared_displacement(x, dt, n_blocks=8)
    fit = diffusion_coefficient(res.time, res.msd, res.blocks)
    assert 0 < fit.D_err < 0.1 * d_true
    assert abs(fit.D - d_true) < 3 * fit.D_err
    assert fit.fit_window == pytest.approx((0.1 * res.time[-1], 0.5 * res.time[-1]))
    assert fit.D_cm2_s == pytest.approx(fit.D * 0.1)
    assert fit.D_err_cm2_s == pytest.approx(fit.D_err * 0.1)


def test_error_bar_covers_the_truth_at_the_stated_rate():
    # Over independent runs, |D - D_true| < 2 sigma should hold ~95 % of the time.
    d_true, hits, runs = 0.1, 0, 40
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        res = mean_squared_displacement(_walk(rng, 120, 200, d_true, 1.0), 1.0, n_blocks=10)
        fit = diffusion_coefficient(res.time, res.msd, res.blocks)
        hits += abs(fit.D - d_true) < 2 * fit.D_err
    assert hits >= 0.8 * runs


def test_dimensions_scale_the_slope():
    t = np.arange(50.0)
    assert pytest.approx(0.2) == diffusion_coefficient(t, 4 * 0.2 * t, dimensions=2).D
    assert pytest.approx(0.2) == diffusion_coefficient(t, 2 * 0.2 * t, dimensions=1).D


def test_explicit_fit_window():
    t = np.arange(100.0)
    y = np.where(t < 20, t**2, 6 * 0.5 * t + 10.0)
    fit = diffusion_coefficient(t, y, fit_window=(30.0, 90.0))
    assert pytest.approx(0.5) == fit.D
    assert fit.intercept == pytest.approx(10.0)
    assert fit.n_points == 61
    assert np.isnan(fit.D_err)


def test_single_frame_rejected():
    with pytest.raises(ValueError, match="at least 2 frames"):
        mean_squared_displacement(np.zeros((1, 3, 3)), 1.0)


@pytest.mark.parametrize("dt", [0.0, -1.0, np.nan])
def test_bad_timestep(dt):
    with pytest.raises(ValueError, match="timestep must be a positive time in fs"):
        mean_squared_displacement(np.zeros((3, 2, 3)), dt)


def test_nan_positions():
    x = np.zeros((4, 2, 3))
    x[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="positions contains NaN"):
        mean_squared_displacement(x, 1.0)


def test_species_length_mismatch():
    with pytest.raises(ValueError, match="species must hold one label per atom"):
        mean_squared_displacement(np.zeros((4, 2, 3)), 1.0, species=[1, 2, 3])


def test_cell_frame_mismatch():
    with pytest.raises(ValueError, match="cell with one cell per frame"):
        mean_squared_displacement(np.zeros((4, 2, 3)), 1.0, cell=np.ones((3, 3, 3)))


def test_fit_window_too_narrow():
    t = np.arange(10.0)
    with pytest.raises(ValueError, match=r"fit_window .* contains 2 lag times"):
        diffusion_coefficient(t, t, fit_window=(3.0, 4.0))
    with pytest.raises(ValueError, match="fit_window must be increasing"):
        diffusion_coefficient(t, t, fit_window=(5.0, 4.0))


def test_msd_and_time_shapes_must_match():
    with pytest.raises(ValueError, match="time and msd must be 1-D of equal length"):
        diffusion_coefficient(np.arange(10.0), np.arange(9.0))
    with pytest.raises(ValueError, match=r"blocks must have shape \(n_blocks, 10\)"):
        diffusion_coefficient(np.arange(10.0), np.arange(10.0), np.zeros((3, 9)))
