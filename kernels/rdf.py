"""Radial distribution function g(r), total and partial, averaged over frames.

For species :math:`a, b` with :math:`N_a, N_b` atoms in a cell of volume
:math:`V = |\\det H|`, the partial RDF in the histogram bin :math:`[r_k, r_{k+1})` is

.. math::

    g_{ab}(r_k) = \\frac{V}{N_a (N_b - \\delta_{ab})}
        \\frac{\\langle P_{ab}(k) \\rangle}{\\tfrac{4\\pi}{3}(r_{k+1}^3 - r_k^3)},

where :math:`P_{ab}(k)` counts ordered pairs ``(i in a, j in b, i != j)`` whose
minimum-image distance falls in the bin, and :math:`\\langle\\cdot\\rangle` averages frames
(each frame with its own volume, so variable-cell runs are handled). The total RDF is the
same with all atoms in one species. The :math:`- \\delta_{ab}` (``finite_size=True``, the
default) makes an ideal gas give exactly 1; ``finite_size=False`` divides by
:math:`N_a N_b` instead, the convention of ASE's ``get_rdf`` and LAMMPS, for which an ideal
gas of :math:`N` atoms gives :math:`1 - 1/N` for like pairs.

Bins are ``np.linspace(0, r_max, n_bins + 1)`` and follow ``np.histogram``: each bin holds
``r_k <= r < r_{k+1}``, the last also ``r == r_max``, so a pair exactly at ``r_max`` is
counted in the last bin and never past it.

Trajectories larger than memory are analysed block by block with :class:`RDFAccumulator`:
each :meth:`RDFAccumulator.update` adds the volume-weighted pair counts of a block of frames
(integers, so the order of blocks does not change the result), and
:meth:`RDFAccumulator.result` normalises once at the end. :func:`radial_distribution` is one update.

The running coordination number is the integral
:math:`n(r) = 4\\pi\\rho\\int_0^r g(r')\\,r'^2\\,dr'` with :math:`g` constant in each bin,
so :math:`n(r_{k+1})` equals the mean number of neighbours within :math:`r_{k+1}` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange

from matdx.kernels.cells import (
    as_cells,
    as_pbc,
    as_species,
    as_trajectory,
    check_cutoff,
    triple_product,
)
from matdx.kernels.neighbors import build_grid, neighbor_bin

__all__ = [
    "RDFAccumulator",
    "RDFResult",
    "radial_distribution",
    "running_coordination_number",
    "shell_volumes",
]


@dataclass(frozen=True)
class RDFResult:
    """Radial distribution functions averaged over frames.

    Attributes
    ----------
    edges : (n_bins + 1,) float64, Å
        Bin edges ``linspace(0, r_max, n_bins + 1)``.
    r : (n_bins,) float64, Å
        Bin centres.
    g : (n_bins,) float64
        Total RDF (dimensionless).
    density : float, Å⁻³
        Number density of the neighbours of an atom used in the normalisation,
        ``(N - 1) / V`` (``N / V`` with ``finite_size=False``), averaged as ``<1/V>``.
    partial : dict[(label_a, label_b), (n_bins,) float64]
        Partial RDFs for every ordered pair of species labels (``g_ab == g_ba``).
    partial_density : dict[(label_a, label_b), float], Å⁻³
        Density of ``b`` atoms around an ``a`` atom, ``(N_b - δ_ab) / V`` (or ``N_b / V``).
    n_frames : int
        Frames averaged.
    """

    edges: np.ndarray
    r: np.ndarray
    g: np.ndarray
    density: float
    partial: dict = field(default_factory=dict)
    partial_density: dict = field(default_factory=dict)
    n_frames: int = 0


def shell_volumes(edges: np.ndarray) -> np.ndarray:
    """Volumes of the spherical shells between consecutive bin edges.

    Parameters
    ----------
    edges : (n_bins + 1,) float, Å

    Returns
    -------
    (n_bins,) float64 ndarray, Å³
        ``4π/3 (r_{k+1}^3 - r_k^3)``.
    """
    e = np.asarray(edges, dtype=np.float64)
    return 4.0 * math.pi / 3.0 * (e[1:] ** 3 - e[:-1] ** 3)


def running_coordination_number(edges: np.ndarray, g: np.ndarray, density: float) -> np.ndarray:
    """Running coordination number n(r) = 4πρ ∫₀^r g(r') r'² dr' at the upper bin edges.

    Parameters
    ----------
    edges : (n_bins + 1,) float, Å
        Bin edges of ``g``.
    g : (n_bins,) float
        RDF, taken as constant within each bin.
    density : float, Å⁻³
        Density of the neighbour species (``RDFResult.density`` or
        ``RDFResult.partial_density[(a, b)]``).

    Returns
    -------
    (n_bins,) float64 ndarray
        ``n[k]`` is the mean number of neighbours within ``edges[k + 1]``.

    Raises
    ------
    ValueError
        If ``g`` does not have one value per bin.

    Examples
    --------
    >>> edges = np.linspace(0.0, 3.0, 4)
    >>> n = running_coordination_number(edges, np.ones(3), 3.0 / (4.0 * np.pi))
    >>> n.round(6).tolist()
    [1.0, 8.0, 27.0]
    """
    e = np.asarray(edges, dtype=np.float64)
    values = np.asarray(g, dtype=np.float64)
    if e.ndim != 1 or values.shape != (e.size - 1,):
        raise ValueError(
            f"g must have one value per bin, shape ({e.size - 1},) for {e.size} edges, "
            f"got {values.shape}"
        )
    return np.cumsum(float(density) * values * shell_volumes(e))


@njit(cache=True, parallel=True)
def _pair_histogram(grid, codes, pair_index, n_types, edges, n_chunks):  # pragma: no cover
    pos = grid.positions
    start = grid.start
    offsets = grid.offsets
    n_cells = start.shape[0] - 1
    n_bins = edges.shape[0] - 1
    r_max = edges[n_bins]
    inv_dr = n_bins / r_max
    r2_hi = r_max * r_max * (1.0 + 1e-12)
    hist = np.zeros((n_chunks, n_types, n_bins), np.int64)
    for chunk in prange(n_chunks):
        for home in range(chunk * n_cells // n_chunks, (chunk + 1) * n_cells // n_chunks):
            h0 = start[home]
            h1 = start[home + 1]
            if h0 == h1:
                continue
            for o in range(offsets.shape[0]):
                other, sx, sy, sz = neighbor_bin(grid, home, offsets[o])
                if other < 0:
                    continue
                t1 = start[other + 1]
                for a in range(h0, h1):
                    xa = pos[a, 0] - sx
                    ya = pos[a, 1] - sy
                    za = pos[a, 2] - sz
                    ca = codes[a]
                    t0 = a + 1 if o == 0 else start[other]
                    for b in range(t0, t1):
                        dx = pos[b, 0] - xa
                        dy = pos[b, 1] - ya
                        dz = pos[b, 2] - za
                        d2 = dx * dx + dy * dy + dz * dz
                        if d2 <= r2_hi:
                            d = math.sqrt(d2)
                            if d <= r_max:
                                k = min(int(d * inv_dr), n_bins - 1)
                                # Agree with the edges to the last ulp, as np.histogram does.
                                if d < edges[k]:
                                    k -= 1
                                elif k < n_bins - 1 and d >= edges[k + 1]:
                                    k += 1
                                hist[chunk, pair_index[ca, codes[b]], k] += 1
    # Summed over chunks by the caller: a reduction here would cost seconds of compile.
    return hist


class RDFAccumulator:
    """Accumulate g(r) over blocks of frames (for trajectories larger than memory).

    Parameters
    ----------
    r_max : float, Å
        Largest distance; at most half the smallest perpendicular width of every periodic
        cell passed to :meth:`update`.
    n_bins : int
        Number of histogram bins on ``[0, r_max]``.
    species : (n_atoms,) labels, optional
        Species of each atom (atomic numbers or symbols) for partial RDFs.
    pbc : bool or (3,) bool
        Periodic axes of the cells.
    finite_size : bool
        Normalise by ``N_a (N_b - δ_ab)`` (True, ideal gas → 1) or ``N_a N_b`` (ASE, LAMMPS).

    Raises
    ------
    ValueError
        If ``n_bins`` is not a positive integer or ``r_max`` is not positive.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> acc = RDFAccumulator(r_max=4.0, n_bins=20)
    >>> for block in np.split(rng.random((6, 200, 3)) * 10.0, 3):
    ...     _ = acc.update(block, cell=[10.0, 10.0, 10.0])
    >>> acc.result().n_frames
    6
    """

    def __init__(
        self,
        r_max: float,
        n_bins: int,
        species: np.ndarray | list | None = None,
        *,
        pbc: bool | np.ndarray = True,
        finite_size: bool = True,
    ) -> None:
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
        self.r_max = check_cutoff(r_max, None, np.zeros(3, bool), name="r_max")
        self.n_bins = int(n_bins)
        self.edges = np.linspace(0.0, self.r_max, self.n_bins + 1)
        self.pbc = as_pbc(pbc)
        self.finite_size = bool(finite_size)
        self._species = None if species is None else np.asarray(species)
        self._labels: list | None = None
        self._codes: np.ndarray | None = None
        self._weighted: np.ndarray | None = None
        self._inverse_volume = 0.0
        self.n_frames = 0

    def _setup(self, n_atoms: int) -> None:
        labels, codes = as_species(self._species, n_atoms)
        n_species = len(labels)
        pair_index = np.empty((n_species, n_species), np.int64)
        k = 0
        for a in range(n_species):
            for b in range(a, n_species):
                pair_index[a, b] = pair_index[b, a] = k
                k += 1
        self._labels, self._codes, self._pair_index = labels, codes, pair_index
        self._weighted = np.zeros((k, self.n_bins), np.float64)

    def update(self, positions: np.ndarray, cell: np.ndarray) -> RDFAccumulator:
        """Add a block of frames.

        Parameters
        ----------
        positions : (n_frames, n_atoms, 3) or (n_atoms, 3) float, Å
            Positions, wrapped or not.
        cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å
            Lattice vectors as rows, one cell for the block or one per frame.

        Returns
        -------
        RDFAccumulator
            ``self``, for chaining.

        Raises
        ------
        ValueError
            On mismatched shapes (including a different atom count than earlier blocks),
            NaN positions, a singular cell, or ``r_max`` beyond half the cell width.
        """
        pos = as_trajectory(positions)
        n_frames, n_atoms = pos.shape[:2]
        cells = as_cells(cell, n_frames)
        if self._weighted is None:
            self._setup(n_atoms)
        elif n_atoms != self._codes.shape[0]:
            raise ValueError(
                f"positions has {n_atoms} atoms but earlier frames (or species) had "
                f"{self._codes.shape[0]}"
            )
        check_cutoff(self.r_max, cells, self.pbc, name="r_max")
        n_chunks = 64 * numba.get_num_threads()
        for f in range(n_frames):
            grid = build_grid(pos[f], cells[f], self.pbc, self.r_max)
            codes = self._codes[grid.order]
            counts = _pair_histogram(
                grid, codes, self._pair_index, self._weighted.shape[0], self.edges, n_chunks
            ).sum(axis=0)
            volume = triple_product(cells[f])
            self._weighted += volume * counts
            self._inverse_volume += 1.0 / volume
        self.n_frames += n_frames
        return self

    def result(self) -> RDFResult:
        """Normalised RDFs of all frames added so far.

        Returns
        -------
        RDFResult

        Raises
        ------
        ValueError
            If no frame was added.
        """
        if self.n_frames == 0 or self._weighted is None:
            raise ValueError("no frames were added; call update(positions, cell) first")
        shells = shell_volumes(self.edges)
        mean = self._weighted / self.n_frames
        counts = np.bincount(self._codes, minlength=len(self._labels)).astype(np.float64)
        inverse_volume = self._inverse_volume / self.n_frames
        delta = 1.0 if self.finite_size else 0.0
        partial: dict = {}
        partial_density: dict = {}
        for a, label_a in enumerate(self._labels):
            for b, label_b in enumerate(self._labels):
                same = a == b
                others = counts[b] - (delta if same else 0.0)
                ordered = mean[self._pair_index[a, b]] * (2.0 if same else 1.0)
                partial[(label_a, label_b)] = _normalise(ordered, counts[a] * others, shells)
                partial_density[(label_a, label_b)] = others * inverse_volume
        n = counts.sum()
        total = _normalise(2.0 * mean.sum(axis=0), n * (n - delta), shells)
        return RDFResult(
            edges=self.edges.copy(),
            r=0.5 * (self.edges[1:] + self.edges[:-1]),
            g=total,
            density=(n - delta) * inverse_volume,
            partial=partial,
            partial_density=partial_density,
            n_frames=self.n_frames,
        )


def _normalise(ordered_counts: np.ndarray, pairs: float, shells: np.ndarray) -> np.ndarray:
    if pairs <= 0.0:
        return np.full(shells.shape, np.nan)
    return ordered_counts / (pairs * shells)


def radial_distribution(
    positions: np.ndarray,
    cell: np.ndarray,
    r_max: float,
    n_bins: int,
    species: np.ndarray | list | None = None,
    *,
    pbc: bool | np.ndarray = True,
    finite_size: bool = True,
) -> RDFResult:
    """Total and partial radial distribution functions, averaged over frames.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) or (n_atoms, 3) float, Å
        Positions, wrapped or not.
    cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å
        Lattice vectors as rows (triclinic allowed), fixed or one per frame.
    r_max : float, Å
        Largest distance, at most half the smallest perpendicular width of the cell.
    n_bins : int
        Number of bins on ``[0, r_max]``.
    species : (n_atoms,) labels, optional
        Atomic numbers or symbols; partial RDFs are returned for every pair of labels.
    pbc : bool or (3,) bool
        Periodic axes.
    finite_size : bool
        See the module docstring: True normalises like pairs by ``N_a (N_a - 1)``.

    Returns
    -------
    RDFResult

    Raises
    ------
    ValueError
        On mismatched shapes, NaN positions, a singular cell, ``r_max`` too large for the
        cell, or a bad ``n_bins``.

    Examples
    --------
    >>> a = 4.0
    >>> fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a
    >>> cells = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    >>> pos = (cells[:, None, :] * a + fcc[None]).reshape(-1, 3)
    >>> res = radial_distribution(pos, [3 * a] * 3, r_max=3.2, n_bins=32)
    >>> n = running_coordination_number(res.edges, res.g, res.density)
    >>> int(round(n[-1]))
    12
    """
    return (
        RDFAccumulator(r_max, n_bins, species, pbc=pbc, finite_size=finite_size)
        .update(positions, cell)
        .result()
    )
