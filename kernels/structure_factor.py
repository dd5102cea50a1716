"""Static structure factor S(q): directly from positions, and from g(r).

**Direct.** On the reciprocal-lattice vectors of the (triclinic) cell,
:math:`\\mathbf{q} = 2\\pi (h\\,\\mathbf{b}_1 + k\\,\\mathbf{b}_2 + l\\,\\mathbf{b}_3)` with
:math:`\\mathbf{b}_i` the rows of :math:`H^{-T}` and integer, not all zero, ``h, k, l``,

.. math::

    S(\\mathbf{q}) = \\frac{1}{N}\\Big|\\sum_{j=1}^{N} e^{i\\mathbf{q}\\cdot\\mathbf{r}_j}\\Big|^2,

and :math:`S(q)` in a bin of :math:`|\\mathbf{q}|` is the mean over every vector in the bin
and every frame. Only one of each pair :math:`\\pm\\mathbf{q}` is evaluated (they are equal).
The phase factor :math:`e^{2\\pi i (h s_1 + k s_2 + l s_3)}` of an atom with fractional
coordinates :math:`s` is a product of three per-axis tables; the vectors are grouped by
``(h, k)``, whose phase is formed once per atom, so each vector costs one complex
multiply-add per atom and no trigonometric call: :math:`O(N n_q)`. An ideal gas gives
:math:`\\langle S \\rangle = 1`.

**From g(r).** For an isotropic system of density :math:`\\rho`,

.. math::

    S(q) = 1 + 4\\pi\\rho\\int_0^{r_{max}} r^2\\,(g(r) - 1)\\,\\frac{\\sin qr}{qr}\\,dr,

integrated exactly for a histogram (``g`` constant in each bin, using
:math:`\\int r\\sin(qr)\\,dr = (\\sin qr - qr\\cos qr)/q^2`), optionally with the Lorch
window :math:`\\sin(\\pi r/r_{max})/(\\pi r / r_{max})` (evaluated at bin centres) that
damps the truncation ripples.

Units: q in Å⁻¹, S dimensionless. :class:`StructureFactorAccumulator` adds blocks of frames
(sums of S and of vector counts per bin), so a trajectory larger than memory is processed
block by block; bins without any q-vector are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from matdx.kernels.cells import as_cells, as_trajectory

#: Atoms per block of phase tables (cos and sin, 3 axes x (2 limit + 1) x atoms each).
ATOM_CHUNK = 16384

__all__ = [
    "StructureFactorAccumulator",
    "StructureFactorResult",
    "reciprocal_vectors",
    "static_structure_factor",
    "structure_factor_from_rdf",
]


@dataclass(frozen=True)
class StructureFactorResult:
    """Spherically averaged S(q).

    Attributes
    ----------
    edges : (n_bins + 1,) float64, Å⁻¹
        Bin edges ``linspace(q_min, q_max, n_bins + 1)``.
    q : (n_bins,) float64, Å⁻¹
        Mean ``|q|`` of the vectors in each bin (bin centre if the bin is empty).
    s : (n_bins,) float64
        S(q); NaN in bins that no allowed vector falls into.
    counts : (n_bins,) int64
        Number of (q-vector, frame) samples in each bin, counting ``±q`` once.
    """

    edges: np.ndarray
    q: np.ndarray
    s: np.ndarray
    counts: np.ndarray


def reciprocal_vectors(cell: np.ndarray, q_max: float, q_min: float = 0.0) -> np.ndarray:
    """Miller indices of the allowed q-vectors with ``q_min < |q| <= q_max``, one per ``±q``.

    Parameters
    ----------
    cell : (3, 3) float, Å
        Lattice vectors as rows.
    q_max, q_min : float, Å⁻¹

    Returns
    -------
    (n_q, 3) int64 ndarray
        ``(h, k, l)``, lexicographically positive (the first non-zero index is > 0), in
        ascending ``(h, k, l)`` order.

    Examples
    --------
    >>> reciprocal_vectors(np.eye(3) * 2 * np.pi, 1.0).tolist()
    [[0, 0, 1], [0, 1, 0], [1, 0, 0]]
    """
    h = np.asarray(cell, dtype=np.float64)
    # |h_i| <= |q| |a_i| / (2π) because q . a_i = 2π h_i.
    limits = np.floor(q_max * np.linalg.norm(h, axis=1) / (2.0 * math.pi) + 1e-9).astype(int)
    axes = [np.arange(0, limits[0] + 1), np.arange(-limits[1], limits[1] + 1)]
    axes.append(np.arange(-limits[2], limits[2] + 1))
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    positive = (hkl[:, 0] > 0) | ((hkl[:, 0] == 0) & (hkl[:, 1] > 0))
    positive |= (hkl[:, 0] == 0) & (hkl[:, 1] == 0) & (hkl[:, 2] > 0)
    hkl = hkl[positive]
    q = np.linalg.norm(2.0 * math.pi * hkl @ np.linalg.inv(h).T, axis=1)
    return np.ascontiguousarray(hkl[(q > q_min) & (q <= q_max)], dtype=np.int64)


@njit(cache=True, parallel=True)
def _phase_tables(frac, limits):  # pragma: no cover - compiled
    """cos and sin of ``2π m s_d`` per axis ``d``: (2 limit_d + 1, n_atoms), m from -limit_d."""
    n = frac.shape[0]
    width = 2 * limits.max() + 1
    cos_t = np.empty((3, width, n))
    sin_t = np.empty((3, width, n))
    for a in prange(n):
        for d in range(3):
            for m in range(2 * limits[d] + 1):
                angle = 2.0 * math.pi * (m - limits[d]) * frac[a, d]
                cos_t[d, m, a] = math.cos(angle)
                sin_t[d, m, a] = math.sin(angle)
    return cos_t, sin_t


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _add_density(frac, hk, first, ls, limits, re_sum, im_sum):  # pragma: no cover - compiled
    """Add ``sum_j exp(2πi (h s1 + k s2 + l s3)_j)`` to ``re_sum + i im_sum``.

    The q-vectors are grouped by ``(h, k) = hk[p]``; group ``p`` holds the ``l`` values
    ``ls[first[p]:first[p + 1]]``. Per group the ``(h, k)`` phase of every atom is formed
    once, then each ``l`` costs one complex multiply-add per atom. Groups run in parallel
    and write disjoint slices of the sums. ``reassoc`` lets the sums over atoms vectorise
    (it changes only the rounding order).
    """
    n = frac.shape[0]
    cos_t, sin_t = _phase_tables(frac, limits)
    for p in prange(hk.shape[0]):
        h = hk[p, 0] + limits[0]
        k = hk[p, 1] + limits[1]
        hk_re = np.empty(n)
        hk_im = np.empty(n)
        for a in range(n):
            c0 = cos_t[0, h, a]
            s0 = sin_t[0, h, a]
            c1 = cos_t[1, k, a]
            s1 = sin_t[1, k, a]
            hk_re[a] = c0 * c1 - s0 * s1
            hk_im[a] = c0 * s1 + s0 * c1
        for q in range(first[p], first[p + 1]):
            m = ls[q] + limits[2]
            re = 0.0
            im = 0.0
            for a in range(n):
                c2 = cos_t[2, m, a]
                s2 = sin_t[2, m, a]
                re += hk_re[a] * c2 - hk_im[a] * s2
                im += hk_re[a] * s2 + hk_im[a] * c2
            re_sum[q] += re
            im_sum[q] += im


def _collective_density(frac: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    """|sum_j exp(2πi (h s1 + k s2 + l s3)_j)|^2 for q-vectors sorted by (h, k, l).

    Atoms are processed in chunks of ``ATOM_CHUNK`` so the phase tables stay small.
    """
    keys, first = np.unique(hkl[:, :2], axis=0, return_index=True)
    keys = keys.astype(np.int64)
    first = np.append(first, hkl.shape[0]).astype(np.int64)
    ls = np.ascontiguousarray(hkl[:, 2])
    limits = np.abs(hkl).max(axis=0).astype(np.int64)
    re_sum = np.zeros(hkl.shape[0])
    im_sum = np.zeros(hkl.shape[0])
    for a0 in range(0, frac.shape[0], ATOM_CHUNK):
        chunk = np.ascontiguousarray(frac[a0 : a0 + ATOM_CHUNK])
        _add_density(chunk, keys, first, ls, limits, re_sum, im_sum)
    return re_sum**2 + im_sum**2


@njit(cache=True)
def _bin_sums(q, values, edges, sums, q_sums, counts):  # pragma: no cover - compiled
    n_bins = edges.shape[0] - 1
    lo = edges[0]
    inv = n_bins / (edges[n_bins] - lo)
    for v in range(q.shape[0]):
        x = q[v]
        if x < lo or x > edges[n_bins]:
            continue
        k = min(int((x - lo) * inv), n_bins - 1)
        if x < edges[k]:
            k -= 1
        elif k < n_bins - 1 and x >= edges[k + 1]:
            k += 1
        sums[k] += values[v]
        q_sums[k] += x
        counts[k] += 1


class StructureFactorAccumulator:
    """Accumulate the direct S(q) over blocks of frames.

    Parameters
    ----------
    q_max : float, Å⁻¹
        Largest ``|q|``.
    n_bins : int
        Bins on ``[q_min, q_max]``.
    q_min : float, Å⁻¹
        Smallest ``|q|`` (vectors with ``|q| <= q_min`` are skipped; ``q = 0`` always is).

    Raises
    ------
    ValueError
        If ``n_bins`` is not a positive integer or ``0 <= q_min < q_max`` fails.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> acc = StructureFactorAccumulator(q_max=3.0, n_bins=6)
    >>> for block in np.split(rng.random((4, 100, 3)) * 8.0, 2):
    ...     _ = acc.update(block, [8.0, 8.0, 8.0])
    >>> acc.result().s.shape
    (6,)
    """

    def __init__(self, q_max: float, n_bins: int, q_min: float = 0.0) -> None:
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
        q_lo, q_hi = float(q_min), float(q_max)
        if not (math.isfinite(q_hi) and 0.0 <= q_lo < q_hi):
            raise ValueError(
                f"need 0 <= q_min < q_max (finite, Å⁻¹), got q_min={q_min!r}, q_max={q_max!r}"
            )
        self.q_min, self.q_max, self.n_bins = q_lo, q_hi, int(n_bins)
        self.edges = np.linspace(q_lo, q_hi, self.n_bins + 1)
        self._sums = np.zeros(self.n_bins)
        self._q_sums = np.zeros(self.n_bins)
        self._counts = np.zeros(self.n_bins, np.int64)
        self._n_atoms: int | None = None
        self.n_frames = 0

    def update(self, positions: np.ndarray, cell: np.ndarray) -> StructureFactorAccumulator:
        """Add a block of frames.

        Parameters
        ----------
        positions : (n_frames, n_atoms, 3) or (n_atoms, 3) float, Å
        cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å
            Periodic cell (all three axes periodic), fixed or one per frame.

        Returns
        -------
        StructureFactorAccumulator
            ``self``.

        Raises
        ------
        ValueError
            On mismatched shapes, NaN positions, a singular cell, or an atom count that
            differs from earlier blocks.
        """
        pos = as_trajectory(positions)
        n_frames, n_atoms = pos.shape[:2]
        cells = as_cells(cell, n_frames)
        if self._n_atoms is None:
            self._n_atoms = n_atoms
        elif n_atoms != self._n_atoms:
            raise ValueError(
                f"positions has {n_atoms} atoms but earlier frames had {self._n_atoms}"
            )
        hkl = None
        for f in range(n_frames):
            if hkl is None or not np.array_equal(cells[f], cells[f - 1]):
                hkl = reciprocal_vectors(cells[f], self.q_max, self.q_min)
                q = np.linalg.norm(2.0 * math.pi * hkl @ np.linalg.inv(cells[f]).T, axis=1)
            if hkl.shape[0] == 0:
                continue
            frac = pos[f] @ np.linalg.inv(cells[f])
            frac -= np.floor(frac)  # small arguments keep the phases accurate
            values = _collective_density(frac, hkl) / n_atoms
            _bin_sums(q, values, self.edges, self._sums, self._q_sums, self._counts)
        self.n_frames += n_frames
        return self

    def result(self) -> StructureFactorResult:
        """S(q) of all frames added so far.

        Returns
        -------
        StructureFactorResult

        Raises
        ------
        ValueError
            If no frame was added.
        """
        if self.n_frames == 0:
            raise ValueError("no frames were added; call update(positions, cell) first")
        filled = self._counts > 0
        s = np.full(self.n_bins, np.nan)
        s[filled] = self._sums[filled] / self._counts[filled]
        q = 0.5 * (self.edges[1:] + self.edges[:-1])
        q[filled] = self._q_sums[filled] / self._counts[filled]
        return StructureFactorResult(self.edges.copy(), q, s, self._counts.copy())


def static_structure_factor(
    positions: np.ndarray,
    cell: np.ndarray,
    q_max: float,
    n_bins: int,
    q_min: float = 0.0,
) -> StructureFactorResult:
    """Static structure factor on the allowed q-vectors of the cell, averaged in |q| bins.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) or (n_atoms, 3) float, Å
    cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å
        Lattice vectors as rows (triclinic allowed), fixed or one per frame.
    q_max : float, Å⁻¹
    n_bins : int
    q_min : float, Å⁻¹

    Returns
    -------
    StructureFactorResult

    Raises
    ------
    ValueError
        See :class:`StructureFactorAccumulator`.

    Examples
    --------
    >>> a = 3.0
    >>> grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    >>> res = static_structure_factor(grid * a, [4 * a] * 3, q_max=2.2, n_bins=22)
    >>> float(res.s[np.nanargmax(res.s)])    # Bragg peak of the simple-cubic lattice
    64.0
    """
    return StructureFactorAccumulator(q_max, n_bins, q_min).update(positions, cell).result()


def structure_factor_from_rdf(
    edges: np.ndarray,
    g: np.ndarray,
    density: float,
    q: np.ndarray,
    *,
    window: str = "none",
) -> np.ndarray:
    """S(q) as the Fourier transform of a histogrammed g(r).

    Parameters
    ----------
    edges : (n_bins + 1,) float, Å
        Bin edges of ``g`` (``RDFResult.edges``).
    g : (n_bins,) float
        RDF (``RDFResult.g``), constant within each bin.
    density : float, Å⁻³
        Number density ``N / V``.
    q : (n_q,) float, Å⁻¹
        Wavenumbers (``q = 0`` allowed).
    window : {"none", "lorch"}
        Optional Lorch window on ``g - 1``.

    Returns
    -------
    (n_q,) float64 ndarray

    Raises
    ------
    ValueError
        On mismatched shapes, a negative ``q``, a non-positive density or an unknown window.

    Examples
    --------
    >>> edges = np.linspace(0.0, 10.0, 101)
    >>> structure_factor_from_rdf(edges, np.ones(100), 0.05, np.array([0.5, 1.0])).tolist()
    [1.0, 1.0]
    """
    e = np.asarray(edges, dtype=np.float64)
    values = np.asarray(g, dtype=np.float64)
    qs = np.asarray(q, dtype=np.float64)
    if e.ndim != 1 or values.shape != (e.size - 1,):
        raise ValueError(
            f"g must have one value per bin, shape ({e.size - 1},), got {values.shape}"
        )
    if qs.ndim != 1 or np.any(qs < 0) or not np.all(np.isfinite(qs)):
        raise ValueError("q must be a 1-D array of finite wavenumbers >= 0 (Å⁻¹)")
    if not (math.isfinite(density) and density > 0):
        raise ValueError(f"density must be a positive number density in Å⁻³, got {density!r}")
    h = values - 1.0
    if window == "lorch":
        centres = 0.5 * (e[1:] + e[:-1])
        h = h * np.sinc(centres / e[-1])
    elif window != "none":
        raise ValueError(f"window must be 'none' or 'lorch', got {window!r}")
    shell = np.diff(_sinc_moment(qs[:, None], e[None, :]), axis=1)
    return 1.0 + 4.0 * math.pi * density * (shell @ h)


def _sinc_moment(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Antiderivative of r² sin(qr)/(qr) in r: (sin qr - qr cos qr) / q³ (r³/3 at q = 0).

    Below ``qr = 0.1`` the closed form loses digits to cancellation; there the Taylor series
    ``r³/3 - q²r⁵/30 + q⁴r⁷/840 - q⁶r⁹/45360`` is used (truncation < 1e-14 relative).
    """
    x = q * r
    small = np.abs(x) < 0.1
    with np.errstate(invalid="ignore", divide="ignore"):
        closed = (np.sin(x) - x * np.cos(x)) / q**3
    x2 = x * x
    series = r**3 * (1.0 / 3.0 - x2 / 30.0 + x2 * x2 / 840.0 - x2 * x2 * x2 / 45360.0)
    return np.where(small, series, closed)
