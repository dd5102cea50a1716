"""Bond-angle distribution: angles j–i–k between the neighbours j, k of every atom i.

For every atom :math:`i` and every unordered pair of distinct neighbours :math:`j, k`
within the cutoff (minimum image, from :mod:`matdx.kernels.neighbors`),

.. math::

    \\theta_{jik} = \\arccos \\frac{\\mathbf{r}_{ij}\\cdot\\mathbf{r}_{ik}}
        {|\\mathbf{r}_{ij}|\\,|\\mathbf{r}_{ik}|}

in degrees is histogrammed on ``linspace(0, 180, n_bins + 1)`` with the ``np.histogram``
convention (the last bin includes 180°). A triplet filter selects, e.g., O–Si–O angles:
the centre species and the two neighbour species in either order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from matdx.kernels.cells import as_cell, as_pbc, as_species, as_trajectory, check_cutoff
from matdx.kernels.neighbors import build_grid, pairs_from_grid

__all__ = ["AngleDistribution", "bond_angle_distribution"]


class AngleDistribution(NamedTuple):
    """Histogram of bond angles.

    Attributes
    ----------
    edges : (n_bins + 1,) float64, degrees
    angle : (n_bins,) float64, degrees
        Bin centres.
    counts : (n_bins,) float64
        Mean number of angles per frame in each bin.
    density : (n_bins,) float64, 1/degree
        Normalised so that ``sum(density * diff(edges)) == 1`` (NaN if no angle was found).
    """

    edges: np.ndarray
    angle: np.ndarray
    counts: np.ndarray
    density: np.ndarray


@njit(cache=True)
def _by_centre(i, j, vec, n_atoms):  # pragma: no cover - compiled
    """Both directions of a half neighbour list, grouped by centre atom (CSR)."""
    n_pairs = i.shape[0]
    start = np.zeros(n_atoms + 1, np.int64)
    for p in range(n_pairs):
        start[i[p] + 1] += 1
        start[j[p] + 1] += 1
    for a in range(n_atoms):
        start[a + 1] += start[a]
    fill = start[:-1].copy()
    other = np.empty(2 * n_pairs, np.int64)
    bond = np.empty((2 * n_pairs, 3), np.float64)
    for p in range(n_pairs):
        a = i[p]
        b = j[p]
        other[fill[a]] = b
        bond[fill[a]] = vec[p]
        fill[a] += 1
        other[fill[b]] = a
        bond[fill[b]] = -vec[p]
        fill[b] += 1
    return start, other, bond


@njit(cache=True, parallel=True)
def _angle_histogram(start, other, bond, codes, centre, ends, edges, n_chunks):  # pragma: no cover
    n_atoms = start.shape[0] - 1
    n_bins = edges.shape[0] - 1
    inv = n_bins / 180.0
    hist = np.zeros((n_chunks, n_bins), np.int64)
    for chunk in prange(n_chunks):
        for a in range(chunk * n_atoms // n_chunks, (chunk + 1) * n_atoms // n_chunks):
            if centre >= 0 and codes[a] != centre:
                continue
            for p in range(start[a], start[a + 1]):
                sp = codes[other[p]]
                if ends[0] >= 0 and sp != ends[0] and sp != ends[1]:
                    continue
                xp = bond[p, 0]
                yp = bond[p, 1]
                zp = bond[p, 2]
                np_ = math.sqrt(xp * xp + yp * yp + zp * zp)
                for q in range(p + 1, start[a + 1]):
                    sq = codes[other[q]]
                    if ends[0] >= 0 and not (
                        (sp == ends[0] and sq == ends[1]) or (sp == ends[1] and sq == ends[0])
                    ):
                        continue
                    xq = bond[q, 0]
                    yq = bond[q, 1]
                    zq = bond[q, 2]
                    nq = math.sqrt(xq * xq + yq * yq + zq * zq)
                    c = (xp * xq + yp * yq + zp * zq) / (np_ * nq)
                    c = min(1.0, max(-1.0, c))
                    theta = math.degrees(math.acos(c))
                    k = min(int(theta * inv), n_bins - 1)
                    if theta < edges[k]:
                        k -= 1
                    elif k < n_bins - 1 and theta >= edges[k + 1]:
                        k += 1
                    hist[chunk, k] += 1
    # Summed over chunks by the caller: a reduction here would cost seconds of compile.
    return hist


def bond_angle_distribution(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: bool | np.ndarray = True,
    n_bins: int = 180,
    *,
    species: np.ndarray | list | None = None,
    triplet: tuple | None = None,
) -> AngleDistribution:
    """Distribution of bond angles j–i–k with both neighbours within a cutoff of i.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) or (n_atoms, 3) float, Å
    cutoff : float, Å
        Bond length cutoff; at most half the smallest perpendicular width of the cell.
    cell : (3, 3) or (3,) float, Å, optional
        Fixed cell for all frames; ``None`` means open boundaries.
    pbc : bool or (3,) bool
    n_bins : int
        Bins on ``[0, 180]`` degrees.
    species : (n_atoms,) labels, optional
        Needed with ``triplet``.
    triplet : (label_j, label_i, label_k), optional
        Count only angles at a centre of species ``label_i`` between neighbours of species
        ``label_j`` and ``label_k`` (either order), e.g. ``("O", "Si", "O")``.

    Returns
    -------
    AngleDistribution

    Raises
    ------
    ValueError
        On mismatched shapes, NaN positions, a singular cell, a cutoff beyond half the cell
        width, a bad ``n_bins``, or a ``triplet`` without ``species`` or naming a label that
        is not present.

    Examples
    --------
    >>> water = [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]
    >>> res = bond_angle_distribution(water, cutoff=1.2, n_bins=180, species=[8, 1, 1],
    ...                               triplet=(1, 8, 1))
    >>> float(res.angle[np.argmax(res.counts)])
    104.5
    """
    pos = as_trajectory(positions)
    n_frames, n_atoms = pos.shape[:2]
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    flags = as_pbc(pbc)
    h = None if cell is None else as_cell(cell)
    if h is None:
        flags = np.zeros(3, bool)
    r_c = check_cutoff(cutoff, None if h is None else h[None], flags)
    labels, codes = as_species(species, n_atoms)
    centre, ends = -1, np.array([-1, -1], np.int64)
    if triplet is not None:
        if species is None:
            raise ValueError("triplet needs species (one label per atom)")
        if len(triplet) != 3:
            raise ValueError(f"triplet must be (label_j, label_i, label_k), got {triplet!r}")
        missing = [t for t in triplet if t not in labels]
        if missing:
            raise ValueError(f"triplet labels {missing} are not in species (have {labels})")
        centre = labels.index(triplet[1])
        ends = np.array([labels.index(triplet[0]), labels.index(triplet[2])], np.int64)
    edges = np.linspace(0.0, 180.0, int(n_bins) + 1)
    total = np.zeros(int(n_bins), np.float64)
    n_chunks = 16 * numba.get_num_threads()
    for f in range(n_frames):
        grid = build_grid(pos[f], h, flags, r_c)
        pairs = pairs_from_grid(grid, r_c, both=False, vectors=True)
        start, other, bond = _by_centre(pairs.i, pairs.j, pairs.vector, n_atoms)
        hist = _angle_histogram(start, other, bond, codes, centre, ends, edges, n_chunks)
        total += hist.sum(axis=0)
    counts = total / n_frames
    area = counts.sum()
    density = counts / (area * np.diff(edges)) if area > 0 else np.full(counts.shape, np.nan)
    return AngleDistribution(edges, 0.5 * (edges[1:] + edges[:-1]), counts, density)
