"""Smeared DOS of toy band structures (band gaps: tests/codes/test_bandgap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.dos import smeared_dos
from tests.kernels.reference import trapezoid


def test_gaussian_matches_direct_sum():
    rng = np.random.default_rng(71)
    eig = rng.uniform(-8, 6, size=(2, 7, 9))
    weights = rng.integers(1, 6, size=7).astype(float)
    energies = np.linspace(-10, 8, 701)
    sigma = 0.15
    ours = smeared_dos(eig, energies, weights=weights, sigma=sigma)
    w = weights / weights.sum()
    x = energies[None, None, None, :] - eig[..., None]
    gauss = np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    expected = np.einsum("k,skbe->se", w, gauss)
    # Gaussians are cut at 12 sigma: the neglected tail is below 1e-31 / sigma.
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-30)


def test_lorentzian_matches_direct_sum():
    rng = np.random.default_rng(72)
    eig = rng.uniform(-3, 3, size=(1, 5, 4))
    energies = np.linspace(-5, 5, 301)
    gamma = 0.2
    ours = smeared_dos(eig, energies, sigma=gamma, kind="lorentzian")
    x = energies[None, :] - eig.reshape(-1)[:, None]
    expected = (gamma / np.pi / (x**2 + gamma**2)).sum(axis=0) / 5
    np.testing.assert_allclose(ours[0], expected, rtol=1e-12)


def test_integral_is_the_number_of_states():
    rng = np.random.default_rng(73)
    n_bands = 12
    eig = rng.uniform(-5, 5, size=(2, 10, n_bands))
    weights = rng.random(10)
    energies = np.linspace(-8, 8, 16001)
    dos = smeared_dos(eig, energies, weights=weights, sigma=0.1)
    integral = dos.sum(axis=1) * (energies[1] - energies[0])
    np.testing.assert_allclose(integral, [n_bands, n_bands], rtol=1e-10)


def test_lorentzian_integral_over_a_window():
    eig = np.array([[[0.0]]])
    energies = np.linspace(-2, 2, 40001)
    dos = smeared_dos(eig, energies, sigma=0.3, kind="lorentzian")[0]
    integral = trapezoid(dos, energies)
    assert integral == pytest.approx(2 / np.pi * np.arctan(2 / 0.3), rel=1e-8)


def test_shapes_and_nan():
    with pytest.raises(ValueError, match=r"eigenvalues must have shape \(n_spins, n_kpoints"):
        smeared_dos(np.zeros((3, 4)), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="eigenvalues contain NaN"):
        smeared_dos(np.full((1, 1, 2), np.nan), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        smeared_dos(np.zeros((1, 2, 2)), np.linspace(0, 1, 5), weights=np.ones(3))


def test_bad_smearing():
    with pytest.raises(ValueError, match="sigma must be a positive width"):
        smeared_dos(np.zeros((1, 1, 1)), np.zeros(3), sigma=0.0)
    with pytest.raises(ValueError, match="kind must be 'gaussian' or 'lorentzian'"):
        smeared_dos(np.zeros((1, 1, 1)), np.zeros(3), kind="fermi")
