"""S(q): direct sum on the reciprocal lattice, ideal gas, Bragg peaks, transform of g(r)."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.rdf import radial_distribution
from matdx.kernels.structure_factor import (
    StructureFactorAccumulator,
    reciprocal_vectors,
    static_structure_factor,
    structure_factor_from_rdf,
)
from tests.kernels.reference import structure_factor_direct, triclinic_cell


@pytest.fixture(params=["orthorhombic", "triclinic"])
def cell(request) -> np.ndarray:
    if request.param == "orthorhombic":
        return np.diag([9.0, 10.0, 11.5])
    return triclinic_cell(np.random.default_rng(51))


def _binned_reference(frames, cell, q_max, n_bins, q_min=0.0):
    sums, counts = np.zeros(n_bins), np.zeros(n_bins)
    for pos in frames:
        q, s = structure_factor_direct(pos, cell, q_max)
        keep = q > q_min
        sums += np.histogram(q[keep], bins=n_bins, range=(q_min, q_max), weights=s[keep])[0]
        counts += np.histogram(q[keep], bins=n_bins, range=(q_min, q_max))[0]
    with np.errstate(invalid="ignore"):
        return sums / counts, counts


def test_direct_matches_plain_sum(cell):
    rng = np.random.default_rng(52)
    frames = (rng.random((3, 150, 3)) * 2 - 0.5) @ cell
    res = static_structure_factor(frames, cell, q_max=3.5, n_bins=14, q_min=0.5)
    expected, counts = _binned_reference(frames, cell, 3.5, 14, 0.5)
    # The kernel evaluates one of each ±q pair: half the vectors, same averages.
    np.testing.assert_array_equal(res.counts * 2, counts)
    np.testing.assert_allclose(res.s, expected, rtol=1e-10, equal_nan=True)


def test_reciprocal_vectors_are_complete_and_half(cell):
    hkl = reciprocal_vectors(cell, 2.5)
    q = np.linalg.norm(2 * np.pi * hkl @ np.linalg.inv(cell).T, axis=1)
    reference, _ = structure_factor_direct(np.zeros((1, 3)), cell, 2.5)
    assert 2 * len(hkl) == len(reference)
    np.testing.assert_allclose(np.sort(np.concatenate([q, q])), np.sort(reference), rtol=1e-12)
    first = hkl[np.arange(len(hkl)), np.argmax(hkl != 0, axis=1)]
    assert np.all(first > 0)


def test_ideal_gas_tends_to_one(cell):
    rng = np.random.default_rng(53)
    frames = rng.random((10, 300, 3)) @ cell
    res = static_structure_factor(frames, cell, q_max=4.0, n_bins=8, q_min=1.0)
    # For an ideal gas S(q) per vector is exponential with mean 1: error 1 / sqrt(samples).
    sigma = 1.0 / np.sqrt(res.counts)
    assert np.all(np.abs(res.s - 1.0) < 5 * sigma)


def test_bragg_peak_of_a_simple_cubic_crystal():
    a, n = 2.5, 4
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    res = static_structure_factor(grid, [n * a] * 3, q_max=2 * np.pi / a * 1.01, n_bins=40)
    peak = np.nanargmax(res.s)
    assert res.s[peak] == pytest.approx(n**3)
    assert res.q[peak] == pytest.approx(2 * np.pi / a)
    assert np.nanmax(np.delete(res.s, peak)) < 1e-20


def test_accumulating_blocks_equals_one_call():
    rng = np.random.default_rng(54)
    cell = triclinic_cell(rng)
    frames = rng.random((5, 60, 3)) @ cell
    once = static_structure_factor(frames, cell, 3.0, 10)
    acc = StructureFactorAccumulator(3.0, 10)
    acc.update(frames[:2], cell).update(frames[2:], cell)
    np.testing.assert_array_equal(acc.result().counts, once.counts)
    np.testing.assert_allclose(acc.result().s, once.s, rtol=1e-14, equal_nan=True)


def test_variable_cell_uses_each_frames_lattice():
    rng = np.random.default_rng(55)
    cells = np.array([np.diag([9.0, 10.0, 11.0]) * s for s in (1.0, 1.05)])
    frames = np.einsum("fad,fde->fae", rng.random((2, 80, 3)), cells)
    res = static_structure_factor(frames, cells, 3.0, 6)
    sums, counts = np.zeros(6), np.zeros(6)
    for pos, c in zip(frames, cells, strict=True):
        q, s = structure_factor_direct(pos, c, 3.0)
        sums += np.histogram(q, bins=6, range=(0, 3.0), weights=s)[0]
        counts += np.histogram(q, bins=6, range=(0, 3.0))[0]
    with np.errstate(invalid="ignore"):
        expected = sums / counts
    np.testing.assert_allclose(res.s, expected, rtol=1e-10)


def test_from_rdf_matches_quadrature():
    edges = np.linspace(0.0, 8.0, 81)
    centres = 0.5 * (edges[1:] + edges[:-1])
    g = 1.0 + np.sin(3 * centres) * np.exp(-centres)
    q = np.array([0.0, 1e-6, 0.03, 0.5, 2.0, 7.5])
    density = 0.05
    ours = structure_factor_from_rdf(edges, g, density, q)
    fine = np.linspace(0.0, 8.0, 80 * 4000 + 1)
    mid = 0.5 * (fine[1:] + fine[:-1])
    h = np.repeat(g - 1.0, 4000)
    for value, qq in zip(ours, q, strict=True):
        integrand = mid**2 * h * np.sinc(qq * mid / np.pi)
        expected = 1 + 4 * np.pi * density * np.sum(integrand) * (fine[1] - fine[0])
        assert value == pytest.approx(expected, abs=1e-7)


def test_from_rdf_of_uniform_density_is_one():
    edges = np.linspace(0.0, 10.0, 101)
    s = structure_factor_from_rdf(edges, np.ones(100), 0.08, np.linspace(0, 5, 11))
    np.testing.assert_allclose(s, 1.0, atol=1e-15)


def test_from_rdf_at_q_zero_is_the_integral():
    edges = np.linspace(0.0, 5.0, 6)
    g = np.array([0.0, 0.0, 2.0, 1.0, 1.0])
    # S(0) = 1 + 4πρ ∫ r² (g - 1) dr with g - 1 = -1 on [0, 2) and +1 on [2, 3).
    expected = 1 + 4 * np.pi * 0.1 * (-(2.0**3) / 3 + (3.0**3 - 2.0**3) / 3)
    assert structure_factor_from_rdf(edges, g, 0.1, np.array([0.0]))[0] == pytest.approx(
        expected, rel=1e-14
    )


def test_lorch_window_damps_truncation_ripples():
    rng = np.random.default_rng(56)
    cell = np.diag([20.0] * 3)
    pos = rng.random((4, 800, 3)) * 20.0
    res = radial_distribution(pos, cell, 10.0, 100)
    q = np.linspace(0.3, 6.0, 60)
    plain = structure_factor_from_rdf(res.edges, res.g, res.density, q)
    lorch = structure_factor_from_rdf(res.edges, res.g, res.density, q, window="lorch")
    assert np.std(lorch) < np.std(plain)
    assert np.abs(lorch - 1.0).max() < 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match="need 0 <= q_min < q_max"):
        StructureFactorAccumulator(1.0, 10, q_min=2.0)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        StructureFactorAccumulator(1.0, 0)
    with pytest.raises(ValueError, match="window must be 'none' or 'lorch'"):
        structure_factor_from_rdf(np.linspace(0, 1, 3), np.ones(2), 0.1, np.ones(2), window="x")
    with pytest.raises(ValueError, match="g must have one value per bin"):
        structure_factor_from_rdf(np.linspace(0, 1, 3), np.ones(3), 0.1, np.ones(2))
    with pytest.raises(ValueError, match="q must be a 1-D array"):
        structure_factor_from_rdf(np.linspace(0, 1, 3), np.ones(2), 0.1, np.array([-1.0]))
    with pytest.raises(ValueError, match="density must be a positive"):
        structure_factor_from_rdf(np.linspace(0, 1, 3), np.ones(2), 0.0, np.ones(2))


def test_nan_positions_and_singular_cell():
    pos = np.zeros((2, 3))
    pos[0, 0] = np.nan
    with pytest.raises(ValueError, match="positions contains NaN"):
        static_structure_factor(pos, [5.0] * 3, 2.0, 4)
    with pytest.raises(ValueError, match="cell is singular"):
        static_structure_factor(np.zeros((2, 3)), np.ones((3, 3)), 2.0, 4)


def test_atom_count_change_between_blocks():
    acc = StructureFactorAccumulator(2.0, 4).update(np.zeros((3, 3)), [5.0] * 3)
    with pytest.raises(ValueError, match="positions has 4 atoms but earlier frames had 3"):
        acc.update(np.zeros((4, 3)), [5.0] * 3)
