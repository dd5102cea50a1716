"""Periodic cells: validation, volume, perpendicular widths, wrapping and unwrapping.

A cell is a ``(3, 3)`` float array whose **rows** are the lattice vectors
:math:`\\mathbf{a}_1, \\mathbf{a}_2, \\mathbf{a}_3` in Å (the ASE convention), so Cartesian
positions are :math:`\\mathbf{r} = \\mathbf{s}\\,H` for fractional coordinates
:math:`\\mathbf{s}`. Any orientation is accepted; the cell need not be upper or lower
triangular. The volume is :math:`V = |\\det H|` and the perpendicular width along
axis :math:`i` (the distance between the two faces spanned by the other two vectors) is

.. math::

    w_i = \\frac{V}{|\\mathbf{a}_j \\times \\mathbf{a}_k|}.

A sphere of radius :math:`r` fits inside the cell, so minimum-image distances are unique,
when :math:`r \\le \\min_i w_i / 2` over the periodic axes; every kernel that searches
neighbours checks its cutoff against that limit.

Validation and wrapping are plain numpy (they run once per call, not per pair);
unwrapping a trajectory is a numba kernel that streams through the frames.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "as_cell",
    "as_cells",
    "as_pbc",
    "as_positions",
    "as_species",
    "as_trajectory",
    "cell_volume",
    "check_cutoff",
    "face_widths",
    "max_cutoff",
    "perpendicular_widths",
    "triple_product",
    "unwrap_positions",
    "wrap_positions",
]

#: Relative tolerance on |det(cell)| / (|a1| |a2| |a3|) below which a cell is singular.
SINGULAR_TOLERANCE = 1e-10


def as_pbc(pbc: bool | np.ndarray | tuple[bool, bool, bool], name: str = "pbc") -> np.ndarray:
    """Normalise periodic-boundary flags to a ``(3,)`` bool array.

    Parameters
    ----------
    pbc : bool or (3,) bool
        One flag for all three axes, or one per lattice vector.
    name : str
        Argument name used in error messages.

    Returns
    -------
    (3,) bool ndarray

    Raises
    ------
    ValueError
        If ``pbc`` is neither a scalar nor three flags.

    Examples
    --------
    >>> as_pbc(True)
    array([ True,  True,  True])
    """
    flags = np.asarray(pbc)
    if flags.ndim == 0:
        return np.full(3, bool(flags))
    if flags.shape != (3,):
        raise ValueError(f"{name} must be a bool or three bools, got shape {flags.shape}")
    return flags.astype(bool)


def as_cell(cell: np.ndarray | tuple | list, name: str = "cell") -> np.ndarray:
    """Validate one cell and return it as a ``(3, 3)`` float64 array (rows = lattice vectors).

    Parameters
    ----------
    cell : (3, 3) or (3,) float, Å
        Lattice vectors as rows, or the three edge lengths of an orthorhombic cell.
    name : str
        Argument name used in error messages.

    Returns
    -------
    (3, 3) float64 ndarray, Å

    Raises
    ------
    ValueError
        If the shape is wrong, a value is NaN or infinite, or the cell is singular
        (``|det| <= 1e-10 |a1| |a2| |a3|``).

    Examples
    --------
    >>> float(as_cell([10.0, 10.0, 12.0])[2, 2])
    12.0
    """
    arr = np.asarray(cell, dtype=np.float64)
    if arr.shape == (3,):
        arr = np.diag(arr)
    if arr.shape != (3, 3):
        raise ValueError(f"{name} must have shape (3, 3) or (3,), got {arr.shape}")
    _check_cells(arr[None], name)
    return np.ascontiguousarray(arr)


def as_cells(cell: np.ndarray, n_frames: int, name: str = "cell") -> np.ndarray:
    """Validate one cell for all frames or one cell per frame.

    Parameters
    ----------
    cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å
        A fixed cell, or one cell per frame (variable-cell MD).
    n_frames : int
        Number of frames the cells must cover.
    name : str
        Argument name used in error messages.

    Returns
    -------
    (n_frames, 3, 3) float64 ndarray, Å
        A broadcast (read-only) view when a single cell was given.

    Raises
    ------
    ValueError
        On a wrong shape, NaN or infinite values, or a singular cell in any frame.
    """
    arr = np.asarray(cell, dtype=np.float64)
    if arr.ndim == 3:
        if arr.shape != (n_frames, 3, 3):
            raise ValueError(
                f"{name} with one cell per frame must have shape ({n_frames}, 3, 3) "
                f"to match the positions, got {arr.shape}"
            )
        _check_cells(arr, name)
        return np.ascontiguousarray(arr)
    return np.broadcast_to(as_cell(arr, name), (n_frames, 3, 3))


def _check_cells(cells: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(cells)):
        frame = int(np.argwhere(~np.isfinite(cells))[0, 0])
        where = f" (frame {frame})" if cells.shape[0] > 1 else ""
        raise ValueError(f"{name} contains NaN or infinite values{where}")
    det = np.abs(np.linalg.det(cells))
    scale = np.prod(np.linalg.norm(cells, axis=2), axis=1)
    bad = ~(det > SINGULAR_TOLERANCE * scale)
    if np.any(bad):
        frame = int(np.flatnonzero(bad)[0])
        where = f" in frame {frame}" if cells.shape[0] > 1 else ""
        raise ValueError(
            f"{name} is singular{where}: |det| = {det[frame]:.3g} Å³ for lattice vectors of "
            f"lengths {np.linalg.norm(cells[frame], axis=1).round(6).tolist()} Å; the three "
            "lattice vectors must be linearly independent"
        )


def as_positions(positions: np.ndarray, name: str = "positions") -> np.ndarray:
    """Validate one configuration.

    Parameters
    ----------
    positions : (n_atoms, 3) float, Å
    name : str
        Argument name used in error messages.

    Returns
    -------
    (n_atoms, 3) float64 C-contiguous ndarray, Å

    Raises
    ------
    ValueError
        On a wrong shape or NaN / infinite coordinates.
    """
    arr = np.ascontiguousarray(positions, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n_atoms, 3), got {arr.shape}")
    _check_finite(arr, name)
    return arr


def as_trajectory(positions: np.ndarray, name: str = "positions") -> np.ndarray:
    """Validate a trajectory; a single frame is promoted to a one-frame trajectory.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) or (n_atoms, 3) float, Å
    name : str
        Argument name used in error messages.

    Returns
    -------
    (n_frames, n_atoms, 3) float64 C-contiguous ndarray

    Raises
    ------
    ValueError
        On a wrong shape, no atoms or frames, or NaN / infinite values.
    """
    arr = np.ascontiguousarray(positions, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"{name} must have shape (n_frames, n_atoms, 3) or (n_atoms, 3), got {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one frame and one atom, got {arr.shape}")
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    # A NaN or inf anywhere makes the sum non-finite; the sum needs no temporary array,
    # so the common all-finite case costs one pass. Only then are the values inspected
    # (a finite sum can also overflow, which the inspection clears).
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(arr)
    if np.isfinite(total):
        return
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name} contains NaN or infinite values (first at index {index})")


def as_species(
    species: np.ndarray | list | None, n_atoms: int, name: str = "species"
) -> tuple[list, np.ndarray]:
    """Encode per-atom species labels as small integers.

    Parameters
    ----------
    species : (n_atoms,) array of labels (int or str), or None
        ``None`` puts every atom in one species labelled ``0``.
    n_atoms : int
    name : str
        Argument name used in error messages.

    Returns
    -------
    labels : list
        Sorted distinct labels (Python scalars).
    codes : (n_atoms,) int64 ndarray
        ``labels[codes[i]]`` is the species of atom ``i``.

    Raises
    ------
    ValueError
        If ``species`` is not one label per atom.

    Examples
    --------
    >>> as_species(["O", "Si", "O"], 3)
    (['O', 'Si'], array([0, 1, 0]))
    """
    if species is None:
        return [0], np.zeros(n_atoms, np.int64)
    arr = np.asarray(species)
    if arr.shape != (n_atoms,):
        raise ValueError(
            f"{name} must hold one label per atom, shape ({n_atoms},), got {arr.shape}"
        )
    labels, codes = np.unique(arr, return_inverse=True)
    return labels.tolist(), codes.astype(np.int64).reshape(n_atoms)


def cell_volume(cell: np.ndarray) -> float:
    """Volume of a cell.

    Parameters
    ----------
    cell : (3, 3) or (3,) float, Å

    Returns
    -------
    float, Å³
        ``|det(cell)|``.

    Raises
    ------
    ValueError
        On a wrong shape, NaN values or a singular cell.

    Examples
    --------
    >>> cell_volume([[2.0, 0, 0], [1.0, 2.0, 0], [0, 0, 3.0]])
    12.0
    """
    return triple_product(as_cell(cell))


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of a cell.

    Parameters
    ----------
    cell : (3, 3) or (3,) float, Å

    Returns
    -------
    (3,) float64 ndarray, Å
        ``w_i = V / |a_j x a_k|`` for ``(i, j, k)`` cyclic.

    Raises
    ------
    ValueError
        On a wrong shape, NaN values or a singular cell.

    Examples
    --------
    >>> perpendicular_widths([[4.0, 0, 0], [2.0, 4.0, 0], [0, 0, 5.0]]).round(6).tolist()
    [3.577709, 4.0, 5.0]
    """
    return face_widths(as_cell(cell))


def triple_product(cell: np.ndarray) -> float:
    """``|a1 . (a2 x a3)| = |det(cell)|`` of a validated ``(3, 3)`` cell, Å³.

    Evaluated as a triple product rather than by LU decomposition, so an orthorhombic
    cell gives the exact product of its edge lengths.
    """
    return float(abs(cell[0] @ np.cross(cell[1], cell[2])))


def face_widths(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths ``V / |a_j x a_k|`` of a validated ``(3, 3)`` cell, Å."""
    cross = np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]])
    return triple_product(cell) / np.linalg.norm(cross, axis=1)


def max_cutoff(cell: np.ndarray | None, pbc: bool | np.ndarray = True) -> float:
    """Largest neighbour cutoff the kernels accept for a cell: half the smallest periodic width.

    Parameters
    ----------
    cell : (3, 3) or (3,) float, Å, or None
        ``None`` means open boundaries (no limit).
    pbc : bool or (3,) bool
        Periodic axes; non-periodic axes impose no limit.

    Returns
    -------
    float, Å
        ``min(w_i / 2)`` over periodic axes, ``inf`` if none is periodic.

    Raises
    ------
    ValueError
        On a malformed or singular cell or malformed ``pbc``.

    Examples
    --------
    >>> max_cutoff([10.0, 12.0, 8.0])
    4.0
    >>> max_cutoff([10.0, 12.0, 8.0], pbc=[True, True, False])
    5.0
    """
    if cell is None:
        return math.inf
    flags = as_pbc(pbc)
    if not flags.any():
        return math.inf
    return float(perpendicular_widths(cell)[flags].min() / 2.0)


def check_cutoff(
    cutoff: float,
    cells: np.ndarray | None,
    pbc: np.ndarray,
    name: str = "cutoff",
) -> float:
    """Check a neighbour cutoff against every cell it will be used with.

    Parameters
    ----------
    cutoff : float, Å
        Must be positive, finite and at most half the shortest perpendicular width of
        every periodic cell.
    cells : (n_frames, 3, 3) float, Å, or None
        ``None`` for open boundaries.
    pbc : (3,) bool
    name : str
        Argument name used in error messages (``"r_max"`` for g(r)).

    Returns
    -------
    float
        The cutoff as a Python float.

    Raises
    ------
    ValueError
        If the cutoff is not positive and finite, or exceeds the limit; the message
        names the limit and the axis that sets it.
    """
    value = float(cutoff)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite distance in Å, got {cutoff!r}")
    if cells is None or not pbc.any():
        return value
    cells = np.asarray(cells).reshape(-1, 3, 3)
    unique = np.unique(cells, axis=0) if cells.shape[0] > 1 else cells
    for h in unique:
        widths = face_widths(h)
        widths = np.where(pbc, widths, np.inf)
        axis = int(np.argmin(widths))
        limit = widths[axis] / 2.0
        if value > limit * (1.0 + 1e-12):
            raise ValueError(
                f"{name} = {value:g} Å exceeds half the shortest perpendicular width of the "
                f"periodic cell: {limit:.6g} Å (width {widths[axis]:.6g} Å across lattice "
                f"vector {axis}); use {name} <= {limit:.6g} Å or a larger supercell"
            )
    return value


def wrap_positions(
    positions: np.ndarray, cell: np.ndarray, pbc: bool | np.ndarray = True
) -> np.ndarray:
    """Wrap positions into the cell (fractional coordinates in ``[0, 1)`` on periodic axes).

    Each position is moved by a whole number of lattice vectors, so wrapped and unwrapped
    positions differ by exact lattice translations up to floating-point rounding.

    Parameters
    ----------
    positions : (n_atoms, 3) or (n_frames, n_atoms, 3) float, Å
    cell : (3, 3) or (3,) float, Å
    pbc : bool or (3,) bool
        Axes to wrap; non-periodic coordinates are returned unchanged.

    Returns
    -------
    ndarray, same shape as ``positions``, Å

    Raises
    ------
    ValueError
        On a wrong shape, NaN values or a singular cell.

    Examples
    --------
    >>> wrap_positions([[11.0, -1.0, 5.0]], [10.0, 10.0, 10.0]).tolist()
    [[1.0, 9.0, 5.0]]
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim not in (2, 3) or pos.shape[-1] != 3:
        raise ValueError(f"positions must have shape (..., n_atoms, 3), got {pos.shape}")
    _check_finite(pos, "positions")
    h = as_cell(cell)
    flags = as_pbc(pbc)
    frac = pos @ np.linalg.inv(h)
    images = np.where(flags, np.floor(frac), 0.0)
    return pos - images @ h


def unwrap_positions(
    positions: np.ndarray, cell: np.ndarray, pbc: bool | np.ndarray = True
) -> np.ndarray:
    """Undo periodic wrapping of a trajectory.

    Image counts are accumulated from the jumps of the fractional coordinates between
    consecutive frames: a jump :math:`\\Delta s` on a periodic axis is attributed to
    ``round(Δs)`` boundary crossings. The unwrapped position of frame ``t`` is its wrapped
    position minus the accumulated image count times the lattice vectors **of frame t**
    (the LAMMPS image-flag convention), which is exact for a fixed cell and follows the
    cell for variable-cell runs. This assumes no atom moves by half a cell width or more
    between two stored frames.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) float, Å
        Wrapped positions (already unwrapped positions pass through unchanged).
    cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å
        Fixed cell or one cell per frame, triclinic allowed.
    pbc : bool or (3,) bool
        Axes to unwrap.

    Returns
    -------
    (n_frames, n_atoms, 3) float64 ndarray, Å

    Raises
    ------
    ValueError
        On mismatched shapes, NaN values or a singular cell.

    Examples
    --------
    >>> traj = [[[9.5, 0, 0]], [[0.5, 0, 0]]]
    >>> unwrap_positions(traj, [10.0, 10.0, 10.0])[:, 0, 0].tolist()
    [9.5, 10.5]
    """
    pos = as_trajectory(positions)
    cells = np.ascontiguousarray(as_cells(cell, pos.shape[0]))
    flags = as_pbc(pbc)
    return _unwrap(pos, cells, np.linalg.inv(cells), flags)


@njit(cache=True, parallel=True)
def _unwrap(pos, cells, inverse, pbc):  # pragma: no cover - compiled
    n_frames, n_atoms, _ = pos.shape
    out = np.empty_like(pos)
    block = 256
    for b in prange((n_atoms + block - 1) // block):
        a0 = b * block
        a1 = min(n_atoms, a0 + block)
        previous = np.zeros((a1 - a0, 3))
        images = np.zeros((a1 - a0, 3))
        for k in range(n_frames):
            for a in range(a0, a1):
                for d in range(3):
                    s = (
                        pos[k, a, 0] * inverse[k, 0, d]
                        + pos[k, a, 1] * inverse[k, 1, d]
                        + pos[k, a, 2] * inverse[k, 2, d]
                    )
                    if k > 0 and pbc[d]:
                        images[a - a0, d] += np.round(s - previous[a - a0, d])
                    previous[a - a0, d] = s
                for e in range(3):
                    shift = 0.0
                    for d in range(3):
                        shift += images[a - a0, d] * cells[k, d, e]
                    out[k, a, e] = pos[k, a, e] - shift
    return out
