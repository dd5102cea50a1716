"""k-point grids from a density, band paths, and the docstring examples of matdx.codes."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
from ase.build import bulk

from matdx.codes.errors import InputError
from matdx.codes.kpoints import bandpath_kpoints, kpoint_grid


def test_grid_follows_the_reciprocal_lengths():
    cell = np.diag([2.0, 4.0, 8.0])  # |b_i| = 2π/a_i
    assert kpoint_grid(cell, 3.0) == (
        math.ceil(3 * math.pi),
        math.ceil(3 * math.pi / 2),
        math.ceil(3 * math.pi / 4),
    )


def test_grid_is_1_along_non_periodic_directions_and_grows_with_density():
    cell = np.diag([3.0, 3.0, 20.0])
    assert kpoint_grid(cell, 5.0, pbc=(True, True, False))[2] == 1
    coarse, fine = kpoint_grid(cell, 2.0), kpoint_grid(cell, 8.0)
    assert all(f >= c for f, c in zip(fine, coarse, strict=True))


def test_grid_is_invariant_under_rotation():
    atoms = bulk("Al", "fcc", a=4.05)
    rotated = atoms.copy()
    rotated.rotate(37, "z", rotate_cell=True)
    assert kpoint_grid(atoms.cell, 4.0) == kpoint_grid(rotated.cell, 4.0)


@pytest.mark.parametrize("density", [0, -1.0])
def test_bad_density(density):
    with pytest.raises(InputError, match="density"):
        kpoint_grid(np.eye(3), density)


def test_bandpath_points_are_fractional():
    kpts, path, special = bandpath_kpoints(bulk("Si", "diamond", a=5.43), "GXL", 30)
    assert kpts.shape == (30, 3) and path == "GXL"
    assert np.allclose(kpts[0], special["G"]) and np.allclose(kpts[-1], special["L"])


@pytest.mark.parametrize("name", ["kpoints", "handlers", "execution"])
def test_docstring_examples(name):
    module = importlib.import_module(f"matdx.codes.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
