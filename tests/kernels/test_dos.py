"""Smeared DOS and band gaps of toy band structures."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.dos import band_gap, smeared_dos
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


def _toy_bands(conduction_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosine bands on a 1-D k grid: valence max at k = 0, conduction min at k = shift."""
    k = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    valence = -0.5 + 0.3 * np.cos(k)
    conduction = 1.0 - 0.4 * np.cos(k - conduction_shift)
    deep = -3.0 + 0.1 * np.cos(k)
    return np.stack([deep, valence, conduction], axis=-1)[None], k


def test_direct_gap():
    eig, _ = _toy_bands(0.0)
    gap = band_gap(eig, fermi_level=0.0)
    assert gap.gap == pytest.approx((1.0 - 0.4) - (-0.5 + 0.3))
    assert gap.is_direct
    assert not gap.is_metal
    assert gap.vbm_index == (0, 0, 1)
    assert gap.cbm_index == (0, 0, 2)
    assert gap.direct_gap == pytest.approx(gap.gap)
    assert gap.direct_index == (0, 0)


def test_indirect_gap():
    eig, k = _toy_bands(np.pi)
    gap = band_gap(eig, fermi_level=0.2)
    assert gap.gap == pytest.approx(0.8)
    assert not gap.is_direct
    assert gap.vbm_index == (0, 0, 1)
    assert gap.cbm_index == (0, 8, 2)  # k = π is the 9th of 16 points
    # Direct gap: min over k of 1.5 + 0.1 cos(k), at k = π.
    expected = np.min(1.0 + 0.4 * np.cos(k) - (-0.5 + 0.3 * np.cos(k)))
    assert gap.direct_gap == pytest.approx(expected)
    assert gap.direct_index == (0, 8)


def test_occupations_give_the_same_gap():
    eig, _ = _toy_bands(np.pi)
    occupations = np.zeros_like(eig)
    occupations[..., :2] = 2.0  # non-spin-polarised, two electrons per state
    by_occupation = band_gap(eig, occupations=occupations)
    by_fermi = band_gap(eig, fermi_level=0.0)
    assert by_occupation == by_fermi


def test_spin_polarised_edges_in_different_channels():
    eig, _ = _toy_bands(0.0)
    spin = np.concatenate([eig, eig + 0.25], axis=0)  # spin down shifted up by 0.25 eV
    occupations = np.zeros_like(spin)
    occupations[..., :2] = 1.0
    gap = band_gap(spin, occupations=occupations)
    assert gap.vbm_index == (1, 0, 1)
    assert gap.cbm_index == (0, 0, 2)
    assert gap.gap == pytest.approx(0.8 - 0.25)
    # A direct transition keeps the spin: the smallest direct gap is 0.8 eV, so indirect.
    assert gap.direct_gap == pytest.approx(0.8)
    assert not gap.is_direct


def test_metal():
    k = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    eig = np.stack([-2 + np.cos(k), 2 * np.cos(k)], axis=-1)[None]
    gap = band_gap(eig, fermi_level=0.0)
    assert gap.is_metal
    assert gap.gap == 0.0
    assert not gap.is_direct


def test_exactly_one_of_occupations_or_fermi_level():
    eig, _ = _toy_bands(0.0)
    with pytest.raises(ValueError, match="exactly one of occupations or fermi_level"):
        band_gap(eig)
    with pytest.raises(ValueError, match="exactly one of occupations or fermi_level"):
        band_gap(eig, occupations=np.zeros_like(eig), fermi_level=0.0)


def test_every_state_occupied():
    eig, _ = _toy_bands(0.0)
    with pytest.raises(ValueError, match="every state is occupied"):
        band_gap(eig, fermi_level=10.0)


def test_shapes_and_nan():
    with pytest.raises(ValueError, match=r"eigenvalues must have shape \(n_spins, n_kpoints"):
        smeared_dos(np.zeros((3, 4)), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="eigenvalues contain NaN"):
        smeared_dos(np.full((1, 1, 2), np.nan), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        smeared_dos(np.zeros((1, 2, 2)), np.linspace(0, 1, 5), weights=np.ones(3))
    with pytest.raises(ValueError, match="occupations must have the shape of eigenvalues"):
        band_gap(np.zeros((1, 2, 2)), occupations=np.zeros((1, 2, 3)))


def test_bad_smearing():
    with pytest.raises(ValueError, match="sigma must be a positive width"):
        smeared_dos(np.zeros((1, 1, 1)), np.zeros(3), sigma=0.0)
    with pytest.raises(ValueError, match="kind must be 'gaussian' or 'lorentzian'"):
        smeared_dos(np.zeros((1, 1, 1)), np.zeros(3), kind="fermi")
