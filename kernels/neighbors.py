"""Neighbour search with a cell list, for periodic (orthorhombic or triclinic) and open cells.

The cell is cut into ``n_i`` bins along each lattice vector in fractional coordinates, with
``n_i = floor(k w_i / r_c)`` so that each bin is at least ``r_c / k`` thick perpendicular to
its faces (``w_i`` the perpendicular width, ``r_c`` the cutoff, ``k`` = 1, 2 or 3 sub-bins
per cutoff, chosen from the density so a bin holds about ``ATOMS_PER_BIN`` atoms). Two atoms
closer than ``r_c`` then differ by at most ``k`` bins along every axis, because
:math:`|\\Delta s_i| \\le |\\Delta \\mathbf{r}| / w_i`. Atoms are sorted by bin (a counting
sort, so each bin's atoms are contiguous in memory), and every bin visits the forward half
of its ``(2k + 1)^3`` neighbour bins, so each pair is distance-tested once. A neighbour bin
reached across a periodic face carries the lattice translation of that crossing. The step
to a neighbour bin is taken on the unwrapped bin index and then wrapped, so a small cell
with fewer than ``2k + 1`` bins visits the same bin once per distinct translation, and the
scheme stays exact for any cell shape as long as ``r_c`` is at most half the smallest
perpendicular width: the image within the cutoff is then the minimum image and it is unique
(at exactly half the width both images of an equidistant pair are reported, as both are
neighbours in the infinite crystal).

Open boundaries (``cell=None``, or ``pbc`` false on an axis) bin the extent of the atoms
along that axis and impose no limit on the cutoff.

A pair is a neighbour pair when :math:`|\\mathbf{r}_j - \\mathbf{r}_i| \\le r_c`, with the
distance as returned (the squared-distance test is widened by 1e-12 and re-checked on the
square root, so rounding never adds or drops a pair that the reported distance contradicts).
The pair loops run in parallel over bins (numba ``prange``): one pass counts the pairs of
each bin, a prefix sum gives every bin its slice of the output, a second pass fills it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from matdx.kernels.cells import as_cell, as_pbc, as_positions, check_cutoff, face_widths

__all__ = [
    "CellGrid",
    "NeighborList",
    "build_grid",
    "coordination_numbers",
    "neighbor_list",
    "pairs_from_grid",
]

#: Target number of atoms per bin. Bins are ``cutoff / reach`` thick with ``reach`` in
#: 1..3 chosen from the density; a bin searches ``(2 reach + 1)^3`` bins, which is 27, 15.6
#: or 12.7 r_c^3 of volume for reach 1, 2, 3, traded against more and emptier bins.
ATOMS_PER_BIN = 8.0
#: Upper bound on the number of bins, relative to the number of atoms.
MAX_BINS_PER_ATOM = 4


class NeighborList(NamedTuple):
    """Pairs within the cutoff.

    Attributes
    ----------
    i, j : (n_pairs,) int64
        Atom indices; ``i < j`` unless both directions were requested.
    distance : (n_pairs,) float64, Å
    vector : (n_pairs, 3) float64, Å
        ``r_j - r_i`` for the image of ``j`` nearest to ``i`` (minimum image).
    """

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    vector: np.ndarray


class CellGrid(NamedTuple):
    """Atoms sorted into the bins of a cell list (internal to the pair kernels).

    Attributes
    ----------
    positions : (n_atoms, 3) float64, Å
        Positions wrapped into the cell on periodic axes, in bin order.
    order : (n_atoms,) int64
        ``positions[k]`` is input atom ``order[k]``.
    start : (n_bins + 1,) int64
        Atoms of bin ``b`` are ``positions[start[b]:start[b + 1]]``.
    shape : (3,) int64
        Bins along each lattice vector.
    wrap_index, wrap_count : (3, max(shape) + 2 * reach) int64
        Unwrapped bin index ``t`` along axis ``d`` maps to bin ``wrap_index[d, t + reach]``
        (``-1`` past an open boundary) after ``wrap_count[d, t + reach]`` periodic crossings.
    reach : int
        Bins searched on each side (the sub-bins per cutoff).
    cell : (3, 3) float64, Å
        Lattice vectors used for the translations across periodic faces.
    offsets : (n_offsets, 3) int64
        The forward half of the bin offsets; row 0 is ``(0, 0, 0)``.
    """

    positions: np.ndarray
    order: np.ndarray
    start: np.ndarray
    shape: np.ndarray
    wrap_index: np.ndarray
    wrap_count: np.ndarray
    reach: int
    cell: np.ndarray
    offsets: np.ndarray


def _half_shell(reach: np.ndarray) -> np.ndarray:
    ranges = [np.arange(-r, r + 1) for r in reach]
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    forward = (grid[:, 0] > 0) | ((grid[:, 0] == 0) & (grid[:, 1] > 0))
    forward |= (grid[:, 0] == 0) & (grid[:, 1] == 0) & (grid[:, 2] > 0)
    return np.ascontiguousarray(np.vstack([np.zeros((1, 3), np.int64), grid[forward]]))


def build_grid(
    positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray, cutoff: float
) -> CellGrid:
    """Sort atoms into cell-list bins (validated inputs; see :func:`neighbor_list`).

    Parameters
    ----------
    positions : (n_atoms, 3) float64, Å
    cell : (3, 3) float64, Å, or None
        ``None`` means open boundaries on all axes.
    pbc : (3,) bool
    cutoff : float, Å

    Returns
    -------
    CellGrid
    """
    if cell is None:
        lo = positions.min(axis=0)
        extent = positions.max(axis=0) - lo
        cell = np.diag(np.maximum(extent, cutoff))
        pbc = np.zeros(3, bool)
    inverse = np.linalg.inv(cell)
    widths = face_widths(cell)
    frac = positions @ inverse
    images = np.where(pbc, np.floor(frac), 0.0)
    frac -= images
    wrapped = positions - images @ cell
    lo = np.where(pbc, 0.0, frac.min(axis=0))
    span = np.where(pbc, 1.0, frac.max(axis=0) - lo)
    span = np.where(span > 0.0, span, 1.0)
    thickness = span * widths
    reach = _reach(positions.shape[0] / np.prod(np.maximum(thickness, cutoff)) * cutoff**3)
    # A small margin keeps every bin strictly thicker than cutoff / reach.
    counts = np.floor(thickness * reach / cutoff * (1.0 - 1e-9)).astype(np.int64)
    counts = np.maximum(counts, 1)
    limit = MAX_BINS_PER_ATOM * positions.shape[0] + 64
    if np.prod(counts.astype(np.float64)) > limit:
        scale = (limit / np.prod(counts.astype(np.float64))) ** (1.0 / 3.0)
        counts = np.maximum((counts * scale).astype(np.int64), 1)
    steps = np.full(3, reach, np.int64)
    # Without periodicity an axis with one bin has no neighbours along it.
    steps[(~pbc) & (counts == 1)] = 0
    order, start = _sort_into_bins(frac, lo, span, counts)
    unwrapped = np.arange(-reach, counts.max() + reach)
    wrap_index = np.empty((3, unwrapped.size), np.int64)
    wrap_count = np.empty((3, unwrapped.size), np.int64)
    for d in range(3):
        if pbc[d]:
            wrap_count[d] = np.floor_divide(unwrapped, counts[d])
            wrap_index[d] = unwrapped - wrap_count[d] * counts[d]
        else:
            wrap_count[d] = 0
            wrap_index[d] = np.where((unwrapped >= 0) & (unwrapped < counts[d]), unwrapped, -1)
    return CellGrid(
        positions=np.ascontiguousarray(wrapped[order]),
        order=order,
        start=start,
        shape=counts,
        wrap_index=wrap_index,
        wrap_count=wrap_count,
        reach=reach,
        cell=np.ascontiguousarray(cell, dtype=np.float64),
        offsets=_half_shell(steps),
    )


def _reach(atoms_per_cutoff_cube: float) -> int:
    """Sub-bins per cutoff: finer bins pay off once a cutoff-sized bin holds many atoms."""
    return int(np.clip(np.round((atoms_per_cutoff_cube / ATOMS_PER_BIN) ** (1.0 / 3.0)), 1, 3))


@njit(cache=True)
def _sort_into_bins(frac, lo, span, counts):  # pragma: no cover - compiled
    n = frac.shape[0]
    n_bins = counts[0] * counts[1] * counts[2]
    bin_of = np.empty(n, np.int64)
    start = np.zeros(n_bins + 1, np.int64)
    for a in range(n):
        index = 0
        for d in range(3):
            b = int((frac[a, d] - lo[d]) / span[d] * counts[d])
            if b < 0:
                b = 0
            elif b >= counts[d]:
                b = counts[d] - 1
            index = index * counts[d] + b
        bin_of[a] = index
        start[index + 1] += 1
    for b in range(n_bins):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for a in range(n):
        order[fill[bin_of[a]]] = a
        fill[bin_of[a]] += 1
    return order, start


@njit(inline="always")
def neighbor_bin(grid, home, offset):  # pragma: no cover - compiled
    """Bin reached from bin ``home`` by ``offset``, and the Cartesian translation of that step.

    Returns ``(-1, 0, 0, 0)`` when the step leaves an open boundary.
    """
    shape = grid.shape
    wrap_index = grid.wrap_index
    wrap_count = grid.wrap_count
    reach = grid.reach
    cell = grid.cell
    nz = shape[2]
    ny = shape[1]
    ix = home // (ny * nz) + offset[0] + reach
    iy = (home // nz) % ny + offset[1] + reach
    iz = home % nz + offset[2] + reach
    tx = wrap_index[0, ix]
    ty = wrap_index[1, iy]
    tz = wrap_index[2, iz]
    if tx < 0 or ty < 0 or tz < 0:
        return -1, 0.0, 0.0, 0.0
    wx = wrap_count[0, ix]
    wy = wrap_count[1, iy]
    wz = wrap_count[2, iz]
    sx = wx * cell[0, 0] + wy * cell[1, 0] + wz * cell[2, 0]
    sy = wx * cell[0, 1] + wy * cell[1, 1] + wz * cell[2, 1]
    sz = wx * cell[0, 2] + wy * cell[1, 2] + wz * cell[2, 2]
    return (tx * ny + ty) * nz + tz, sx, sy, sz


@njit(cache=True, parallel=True)
def _count_pairs(grid, cutoff, cutoff2):  # pragma: no cover - compiled
    pos = grid.positions
    start = grid.start
    offsets = grid.offsets
    n_bins = start.shape[0] - 1
    counts = np.zeros(n_bins, np.int64)
    for home in prange(n_bins):
        h0 = start[home]
        h1 = start[home + 1]
        if h0 == h1:
            continue
        total = 0
        for o in range(offsets.shape[0]):
            other, sx, sy, sz = neighbor_bin(grid, home, offsets[o])
            if other < 0:
                continue
            t1 = start[other + 1]
            for a in range(h0, h1):
                xa = pos[a, 0] - sx
                ya = pos[a, 1] - sy
                za = pos[a, 2] - sz
                t0 = a + 1 if o == 0 else start[other]
                for b in range(t0, t1):
                    dx = pos[b, 0] - xa
                    dy = pos[b, 1] - ya
                    dz = pos[b, 2] - za
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 <= cutoff2 and math.sqrt(d2) <= cutoff:
                        total += 1
        counts[home] = total
    return counts


@njit(cache=True, parallel=True)
def _fill_pairs(grid, cutoff, cutoff2, first, both, want_vectors):  # pragma: no cover
    pos = grid.positions
    order = grid.order
    start = grid.start
    offsets = grid.offsets
    n_bins = start.shape[0] - 1
    n_out = first[n_bins] * (2 if both else 1)
    out_i = np.empty(n_out, np.int64)
    out_j = np.empty(n_out, np.int64)
    out_d = np.empty(n_out, np.float64)
    out_v = np.empty((n_out if want_vectors else 0, 3), np.float64)
    half = first[n_bins]
    for home in prange(n_bins):
        h0 = start[home]
        h1 = start[home + 1]
        if h0 == h1:
            continue
        k = first[home]
        for o in range(offsets.shape[0]):
            other, sx, sy, sz = neighbor_bin(grid, home, offsets[o])
            if other < 0:
                continue
            t1 = start[other + 1]
            for a in range(h0, h1):
                xa = pos[a, 0] - sx
                ya = pos[a, 1] - sy
                za = pos[a, 2] - sz
                ia = order[a]
                t0 = a + 1 if o == 0 else start[other]
                for b in range(t0, t1):
                    dx = pos[b, 0] - xa
                    dy = pos[b, 1] - ya
                    dz = pos[b, 2] - za
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 <= cutoff2 and math.sqrt(d2) <= cutoff:
                        ib = order[b]
                        d = math.sqrt(d2)
                        # Report i < j with r_j - r_i; flip the vector when needed.
                        sign = 1.0
                        if ib < ia:
                            out_i[k] = ib
                            out_j[k] = ia
                            sign = -1.0
                        else:
                            out_i[k] = ia
                            out_j[k] = ib
                        out_d[k] = d
                        if want_vectors:
                            out_v[k, 0] = sign * dx
                            out_v[k, 1] = sign * dy
                            out_v[k, 2] = sign * dz
                        if both:
                            out_i[half + k] = out_j[k]
                            out_j[half + k] = out_i[k]
                            out_d[half + k] = d
                            if want_vectors:
                                out_v[half + k, 0] = -sign * dx
                                out_v[half + k, 1] = -sign * dy
                                out_v[half + k, 2] = -sign * dz
                        k += 1
    return out_i, out_j, out_d, out_v


def _prepare(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None,
    pbc: bool | np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, float]:
    pos = as_positions(positions)
    flags = as_pbc(pbc)
    h = None if cell is None else as_cell(cell)
    if h is None:
        flags = np.zeros(3, bool)
    r_c = check_cutoff(cutoff, None if h is None else h[None], flags)
    return pos, h, flags, r_c


def neighbor_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: bool | np.ndarray = True,
    *,
    both_directions: bool = False,
    vectors: bool = True,
) -> NeighborList:
    """All pairs of atoms closer than a cutoff, with distances and minimum-image vectors.

    Parameters
    ----------
    positions : (n_atoms, 3) float, Å
        Cartesian positions; they need not be wrapped into the cell.
    cutoff : float, Å
        Pairs with ``|r_j - r_i| <= cutoff`` are returned. With periodic axes at most half
        the smallest perpendicular width of the cell (see :func:`matdx.kernels.cells.max_cutoff`).
    cell : (3, 3) or (3,) float, Å, optional
        Lattice vectors as rows (any triclinic cell), or orthorhombic edge lengths.
        ``None`` (default) means open boundaries.
    pbc : bool or (3,) bool
        Periodic axes of ``cell`` (ignored when ``cell`` is None).
    both_directions : bool
        If False (default) each pair appears once with ``i < j``; if True it appears as
        ``(i, j)`` and ``(j, i)``, the second half of the arrays mirroring the first.
    vectors : bool
        If False the ``vector`` array is empty (shape ``(0, 3)``), which saves memory.

    Returns
    -------
    NeighborList
        ``(i, j, distance, vector)``; ``vector = r_j - r_i`` (minimum image), Å. The order
        of pairs is deterministic but unspecified; sort with ``np.lexsort((j, i))``.

    Raises
    ------
    ValueError
        If ``positions`` is not ``(n_atoms, 3)`` or holds NaN, the cell is malformed or
        singular, or ``cutoff`` is not positive or exceeds half the smallest periodic width.

    Examples
    --------
    >>> nl = neighbor_list([[0.0, 0, 0], [1.5, 0, 0], [9.5, 0, 0]], 1.8, cell=[10.0] * 3)
    >>> sorted(zip(nl.i.tolist(), nl.j.tolist()))
    [(0, 1), (0, 2)]
    >>> float(nl.vector[np.flatnonzero(nl.j == 2)[0], 0])
    -0.5
    """
    pos, h, flags, r_c = _prepare(positions, cutoff, cell, pbc)
    grid = build_grid(pos, h, flags, r_c)
    return pairs_from_grid(grid, r_c, both_directions, vectors)


def pairs_from_grid(grid: CellGrid, cutoff: float, both: bool, vectors: bool) -> NeighborList:
    """Pairs within ``cutoff`` of a grid from :func:`build_grid` (no validation).

    Parameters
    ----------
    grid : CellGrid
    cutoff : float, Å
        At most the cutoff the grid was built for.
    both : bool
        Also emit each pair reversed (second half of the arrays).
    vectors : bool
        Fill ``vector`` (else it has shape ``(0, 3)``).

    Returns
    -------
    NeighborList
    """
    # Candidates pass a slightly widened squared test; the exact test is sqrt(d2) <= cutoff,
    # the distance that is reported, so no pair is lost or gained by rounding of d2.
    cutoff2 = cutoff * cutoff * (1.0 + 1e-12)
    counts = _count_pairs(grid, cutoff, cutoff2)
    first = np.zeros(counts.shape[0] + 1, np.int64)
    np.cumsum(counts, out=first[1:])
    i, j, d, v = _fill_pairs(grid, cutoff, cutoff2, first, both, vectors)
    return NeighborList(i, j, d, v)


def coordination_numbers(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: bool | np.ndarray = True,
) -> np.ndarray:
    """Number of neighbours of each atom within a cutoff.

    Parameters
    ----------
    positions : (n_atoms, 3) float, Å
    cutoff : float, Å
        Same meaning and limit as in :func:`neighbor_list`.
    cell : (3, 3) or (3,) float, Å, optional
        ``None`` means open boundaries.
    pbc : bool or (3,) bool

    Returns
    -------
    (n_atoms,) int64 ndarray

    Raises
    ------
    ValueError
        As :func:`neighbor_list`.

    Examples
    --------
    >>> coordination_numbers([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]], 1.5).tolist()
    [1, 1, 0]
    """
    pairs = neighbor_list(positions, cutoff, cell, pbc, vectors=False)
    n = len(positions)
    return np.bincount(pairs.i, minlength=n) + np.bincount(pairs.j, minlength=n)
