"""Cells: volume, widths, cutoff limit, wrapping and unwrapping."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.cells import (
    as_cell,
    as_cells,
    as_pbc,
    as_species,
    as_trajectory,
    cell_volume,
    check_cutoff,
    max_cutoff,
    perpendicular_widths,
    unwrap_positions,
    wrap_positions,
)
from tests.kernels.reference import orthorhombic_cell, triclinic_cell, widths


@pytest.fixture(params=["orthorhombic", "triclinic"])
def cell(request) -> np.ndarray:
    if request.param == "orthorhombic":
        return orthorhombic_cell()
    return triclinic_cell(np.random.default_rng(7))


def test_volume_is_triple_product(cell):
    expected = abs(cell[0] @ np.cross(cell[1], cell[2]))
    assert cell_volume(cell) == pytest.approx(expected, rel=1e-13)


def test_left_handed_cell_has_positive_volume():
    cell = np.diag([2.0, 3.0, -4.0])
    assert cell_volume(cell) == pytest.approx(24.0)


def test_perpendicular_widths_match_face_normals(cell):
    np.testing.assert_allclose(perpendicular_widths(cell), widths(cell), rtol=1e-13)


def test_max_cutoff_is_half_smallest_periodic_width(cell):
    w = widths(cell)
    assert max_cutoff(cell) == pytest.approx(w.min() / 2)
    pbc = np.array([True, True, True])
    pbc[np.argmin(w)] = False
    assert max_cutoff(cell, pbc) == pytest.approx(np.sort(w)[1] / 2)
    assert max_cutoff(cell, False) == np.inf
    assert max_cutoff(None) == np.inf


def test_lengths_make_an_orthorhombic_cell():
    np.testing.assert_array_equal(as_cell([1.0, 2.0, 3.0]), np.diag([1.0, 2.0, 3.0]))


def test_wrap_moves_by_lattice_vectors_into_the_cell(cell):
    rng = np.random.default_rng(1)
    pos = (rng.random((50, 3)) * 6 - 3) @ cell
    wrapped = wrap_positions(pos, cell)
    frac = wrapped @ np.linalg.inv(cell)
    assert np.all(frac > -1e-12)
    assert np.all(frac < 1 + 1e-12)
    shift = (pos - wrapped) @ np.linalg.inv(cell)
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-10)


def test_wrap_leaves_non_periodic_axes(cell):
    pos = np.array([[1.5, 2.5, -3.5]]) @ cell
    wrapped = wrap_positions(pos, cell, pbc=[True, False, True])
    frac = wrapped @ np.linalg.inv(cell)
    np.testing.assert_allclose(frac, [[0.5, 2.5, 0.5]], atol=1e-12)


def test_unwrap_recovers_a_continuous_trajectory(cell):
    rng = np.random.default_rng(2)
    frac = np.cumsum(rng.normal(scale=0.05, size=(200, 20, 3)), axis=0)
    true = frac @ cell
    wrapped = wrap_positions(true, cell)
    unwrapped = unwrap_positions(wrapped, cell)
    # Frame 0 stays wrapped, so the result differs by one lattice translation per atom.
    offset = true - unwrapped
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-9)
    lattice = offset[0] @ np.linalg.inv(cell)
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)


def test_unwrap_with_a_cell_per_frame():
    rng = np.random.default_rng(3)
    n_frames = 120
    scale = 1.0 + 0.05 * np.sin(np.linspace(0, 3, n_frames))
    cells = scale[:, None, None] * triclinic_cell(rng)[None]
    # Start one cell away from the origin so frame 0 is wrapped by a lattice vector.
    frac = 1.5 + np.cumsum(rng.normal(scale=0.04, size=(n_frames, 10, 3)), axis=0)
    wrapped = np.einsum("fad,fde->fae", frac - np.floor(frac), cells)
    unwrapped = unwrap_positions(wrapped, cells)
    images0 = np.floor(frac[0])
    expected = np.einsum("fad,fde->fae", frac - images0[None], cells)
    np.testing.assert_allclose(unwrapped, expected, atol=1e-9)


def test_species_codes():
    labels, codes = as_species(["Si", "O", "O", "Si"], 4)
    assert labels == ["O", "Si"]
    np.testing.assert_array_equal(codes, [1, 0, 0, 1])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 3)),
        np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]),
        np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]]),
    ],
)
def test_singular_cell_is_rejected(bad):
    with pytest.raises(ValueError, match="cell is singular"):
        as_cell(bad)


def test_nan_cell_is_rejected():
    with pytest.raises(ValueError, match="cell contains NaN"):
        as_cell([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_cell_shape_is_checked():
    with pytest.raises(ValueError, match=r"cell must have shape \(3, 3\)"):
        as_cell(np.eye(4))
    with pytest.raises(ValueError, match=r"shape \(5, 3, 3\)"):
        as_cells(np.ones((4, 3, 3)) * np.eye(3), 5)


def test_singular_frame_is_named():
    cells = np.repeat(np.eye(3)[None], 4, axis=0)
    cells[2, 2, 2] = 0.0
    with pytest.raises(ValueError, match="singular in frame 2"):
        as_cells(cells, 4)


def test_nan_positions_are_located():
    pos = np.zeros((2, 3, 3))
    pos[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"positions contains NaN .*\(1, 2, 0\)"):
        as_trajectory(pos)


def test_huge_finite_positions_pass_and_inf_is_found():
    pos = np.full((2, 2, 3), 1e308)  # their sum overflows, yet every value is finite
    assert as_trajectory(pos) is not None
    pos[1, 0, 2] = -np.inf
    with pytest.raises(ValueError, match=r"positions contains NaN .*\(1, 0, 2\)"):
        as_trajectory(pos)


def test_positions_shape_is_checked():
    with pytest.raises(ValueError, match="positions must have shape"):
        as_trajectory(np.zeros((4, 2)))


def test_pbc_shape_is_checked():
    with pytest.raises(ValueError, match="pbc must be a bool or three bools"):
        as_pbc([True, False])


def test_species_length_is_checked():
    with pytest.raises(ValueError, match=r"species must hold one label per atom, shape \(3,\)"):
        as_species([1, 2], 3)


def test_cutoff_beyond_half_width_names_the_limit(cell):
    limit = widths(cell).min() / 2
    flags = np.ones(3, bool)
    assert check_cutoff(limit, cell[None], flags) == limit
    with pytest.raises(ValueError, match=rf"cutoff = .* exceeds .* {limit:.6g} Å"):
        check_cutoff(limit * 1.001, cell[None], flags)
    with pytest.raises(ValueError, match="r_max must be a positive"):
        check_cutoff(-1.0, cell[None], flags, name="r_max")
