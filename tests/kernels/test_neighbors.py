"""Cell-list neighbour search against the all-pairs, all-images reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from matdx.kernels.neighbors import coordination_numbers, neighbor_list
from tests.kernels.reference import image_pairs, orthorhombic_cell, triclinic_cell, widths

PBC_CASES = [(True, True, True), (True, False, True), (False, False, True)]


def _cell(kind: str, seed: int = 11) -> np.ndarray:
    return (
        orthorhombic_cell()
        if kind == "orthorhombic"
        else triclinic_cell(np.random.default_rng(seed))
    )


def _sorted(i, j, *arrays):
    order = np.lexsort((j, i))
    return (i[order], j[order], *(a[order] for a in arrays))


def _assert_same_pairs(result, reference):
    i, j, d, v = _sorted(result.i, result.j, result.distance, result.vector)
    ri, rj, rv = _sorted(*reference)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(j, rj)
    np.testing.assert_allclose(v, rv, atol=1e-10)
    np.testing.assert_allclose(d, np.linalg.norm(rv, axis=1), atol=1e-10)


@pytest.mark.parametrize("kind", ["orthorhombic", "triclinic"])
@pytest.mark.parametrize("pbc", PBC_CASES)
@pytest.mark.parametrize("fraction", [0.25, 0.6, 0.999])
def test_pairs_match_brute_force(kind, pbc, fraction):
    rng = np.random.default_rng(5)
    cell = _cell(kind)
    # Unwrapped input: atoms up to a cell away from the home cell.
    pos = (rng.random((300, 3)) * 3.0 - 1.0) @ cell
    cutoff = fraction * widths(cell)[np.array(pbc)].min() / 2
    result = neighbor_list(pos, cutoff, cell, pbc)
    _assert_same_pairs(result, image_pairs(pos, cell, pbc, cutoff))
    assert np.all(result.i < result.j)


@pytest.mark.parametrize("cutoff", [0.8, 3.0, 50.0])
def test_open_boundaries_match_brute_force(cutoff):
    rng = np.random.default_rng(6)
    pos = rng.normal(scale=4.0, size=(250, 3))
    _assert_same_pairs(neighbor_list(pos, cutoff), image_pairs(pos, None, False, cutoff))


def test_no_periodic_axis_with_a_cell_is_open():
    rng = np.random.default_rng(8)
    cell = _cell("triclinic")
    pos = rng.random((200, 3)) @ cell * 2.0
    result = neighbor_list(pos, 6.0, cell, pbc=False)
    _assert_same_pairs(result, image_pairs(pos, None, False, 6.0))


def test_planar_and_collinear_atoms():
    x = np.linspace(0.0, 10.0, 41)
    line = np.column_stack([x, np.zeros_like(x), np.zeros_like(x)])
    _assert_same_pairs(neighbor_list(line, 0.6), image_pairs(line, None, False, 0.6))


def test_both_directions_mirror_the_pairs():
    rng = np.random.default_rng(9)
    cell = _cell("triclinic")
    pos = rng.random((150, 3)) @ cell
    half = neighbor_list(pos, 3.0, cell)
    both = neighbor_list(pos, 3.0, cell, both_directions=True)
    n = half.i.size
    assert both.i.size == 2 * n
    np.testing.assert_array_equal(both.i[n:], both.j[:n])
    np.testing.assert_array_equal(both.j[n:], both.i[:n])
    np.testing.assert_allclose(both.vector[n:], -both.vector[:n])
    np.testing.assert_array_equal(np.sort(both.distance[:n]), np.sort(half.distance))


def test_vectors_are_minimum_image_displacements():
    rng = np.random.default_rng(10)
    cell = _cell("triclinic")
    pos = (rng.random((200, 3)) * 2 - 0.5) @ cell
    nl = neighbor_list(pos, 4.0, cell)
    lattice = (nl.vector - (pos[nl.j] - pos[nl.i])) @ np.linalg.inv(cell)
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(nl.vector, axis=1), nl.distance, rtol=1e-13)


def test_without_vectors():
    rng = np.random.default_rng(12)
    pos = rng.random((100, 3)) * 10
    nl = neighbor_list(pos, 2.0, [10.0] * 3, vectors=False)
    assert nl.vector.shape == (0, 3)
    assert nl.i.size == neighbor_list(pos, 2.0, [10.0] * 3).i.size > 0


def test_cutoff_of_exactly_half_the_box_counts_both_images():
    # Simple cubic, 4 x 4 x 4, spacing 1.5 Å, cutoff = L / 2 = 3.0 Å: in the infinite crystal
    # every atom has 6 + 12 + 8 + 6 = 32 neighbours within 2 spacings; the ones at exactly
    # 2 spacings are reached through both images of the same atom.
    grid = np.array(list(itertools.product(range(4), repeat=3)), float) * 1.5
    cn = coordination_numbers(grid, 3.0, [6.0, 6.0, 6.0])
    np.testing.assert_array_equal(cn, np.full(64, 32))


def test_coordination_numbers_match_brute_force():
    rng = np.random.default_rng(13)
    cell = _cell("triclinic")
    pos = rng.random((300, 3)) @ cell
    i, j, _ = image_pairs(pos, cell, True, 3.5)
    expected = np.bincount(i, minlength=300) + np.bincount(j, minlength=300)
    np.testing.assert_array_equal(coordination_numbers(pos, 3.5, cell), expected)


def test_single_atom_and_no_pairs():
    nl = neighbor_list(np.zeros((1, 3)), 1.0, [5.0, 5.0, 5.0])
    assert nl.i.size == 0
    assert coordination_numbers(np.zeros((1, 3)), 1.0).tolist() == [0]


def test_cutoff_too_large_names_argument_and_limit():
    cell = _cell("triclinic")
    limit = widths(cell).min() / 2
    with pytest.raises(ValueError, match=rf"cutoff = 5 Å exceeds .*{limit:.6g} Å"):
        neighbor_list(np.zeros((2, 3)), 5.0, cell)


def test_cutoff_limit_ignores_open_axes():
    cell = np.diag([4.0, 4.0, 30.0])
    pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(pos, 10.0, cell, pbc=True)
    nl = neighbor_list(pos, 10.0, cell, pbc=(False, False, True))
    assert nl.distance.tolist() == [9.0]


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_non_positive_cutoff(bad):
    with pytest.raises(ValueError, match="cutoff must be a positive finite distance"):
        neighbor_list(np.zeros((2, 3)), bad)


def test_nan_positions():
    pos = np.zeros((3, 3))
    pos[1, 1] = np.nan
    with pytest.raises(ValueError, match="positions contains NaN"):
        neighbor_list(pos, 1.0, [5.0] * 3)


def test_positions_shape():
    with pytest.raises(ValueError, match=r"positions must have shape \(n_atoms, 3\)"):
        neighbor_list(np.zeros((3, 2)), 1.0)


def test_singular_cell():
    with pytest.raises(ValueError, match="cell is singular"):
        neighbor_list(np.zeros((2, 3)), 1.0, np.diag([5.0, 5.0, 0.0]))
