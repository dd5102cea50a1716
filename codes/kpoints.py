"""k-point sampling shared by the plane-wave codes.

The density convention is the one of ASE's ``kptdensity``: points per Å⁻¹ along each
reciprocal lattice vector, with the 2π included (|b_i| = 2π/d_i for the interplanar spacing
d_i), so ``n_i = max(1, ceil(density * |b_i|))``. A density of 3 is coarse, 5 moderate, 8 and
above precise for metals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.cell import Cell

from matdx.codes.errors import InputError

__all__ = ["bandpath_kpoints", "kpoint_grid"]


def kpoint_grid(
    cell: np.ndarray | Cell | Sequence[Sequence[float]],
    density: float,
    pbc: Sequence[bool] = (True, True, True),
) -> tuple[int, int, int]:
    """Monkhorst–Pack grid with at least ``density`` points per Å⁻¹ along each direction.

    Parameters
    ----------
    cell : (3, 3) Å
        Lattice vectors as rows.
    density : points per Å⁻¹ (2π included)
    pbc : (3,) bool
        Non-periodic directions get 1 point.

    Returns
    -------
    (n1, n2, n3)

    Raises
    ------
    InputError
        If ``density`` is not positive or the cell is singular along a periodic direction.

    Examples
    --------
    >>> kpoint_grid([[0, 2.715, 2.715], [2.715, 0, 2.715], [2.715, 2.715, 0]], 5.0)
    (11, 11, 11)
    """
    if not density > 0:
        raise InputError(f"kpoints density={density!r}: expected a positive number (per Å⁻¹)")
    cell = np.asarray(cell.array if isinstance(cell, Cell) else cell, dtype=float)
    if cell.shape != (3, 3):
        raise InputError(f"cell: expected a (3, 3) matrix, got shape {cell.shape}")
    pbc = tuple(bool(p) for p in pbc)
    if abs(np.linalg.det(cell)) < 1e-10:
        if any(pbc):
            raise InputError("cell: singular lattice, cannot build a k-point grid")
        return (1, 1, 1)
    reciprocal = 2.0 * math.pi * np.linalg.inv(cell).T  # rows b_i, with 2π
    grid = []
    for axis in range(3):
        if not pbc[axis]:
            grid.append(1)
            continue
        grid.append(max(1, math.ceil(density * float(np.linalg.norm(reciprocal[axis])) - 1e-9)))
    return (grid[0], grid[1], grid[2])


def bandpath_kpoints(
    atoms: Atoms, path: str | None = None, npoints: int = 60
) -> tuple[np.ndarray, str, dict[str, list[float]]]:
    """k-points along a high-symmetry path (ASE's band-path conventions).

    Parameters
    ----------
    atoms
        Structure whose cell defines the Brillouin zone (not modified).
    path
        Special-point string such as ``"GXWKGLUWLK,UX"``; None: ASE's default for the lattice.
    npoints
        Total number of points along the path.

    Returns
    -------
    kpoints : (n, 3)
        Fractional coordinates of the reciprocal lattice.
    path : str
        The path used.
    special_points : dict
        Label → fractional coordinates.
    """
    if npoints < 2:
        raise InputError(f"npoints={npoints!r}: expected at least 2")
    bandpath = atoms.cell.bandpath(path, npoints=npoints)
    special = {
        label: np.asarray(k, dtype=float).tolist() for label, k in bandpath.special_points.items()
    }
    return np.asarray(bandpath.kpts, dtype=float), bandpath.path, special
