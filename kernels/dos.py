"""Electronic density of states and band gap from DFT eigenvalues.

**DOS.** For eigenvalues :math:`\\varepsilon_{snk}` (spin ``s``, k-point ``k``, band ``n``)
and k-point weights :math:`w_k` normalised to :math:`\\sum_k w_k = 1`,

.. math::

    D_s(E) = \\sum_{k,n} w_k\\,\\delta_\\sigma(E - \\varepsilon_{snk}),

with :math:`\\delta_\\sigma` a unit-area Gaussian of standard deviation :math:`\\sigma` or a
Lorentzian of half width at half maximum :math:`\\sigma`. So :math:`\\int D_s\\,dE` is the
number of bands per spin channel (states per cell per spin); for a non-spin-polarised
calculation (``n_spins = 1``) each state holds two electrons. Gaussians are summed within
:math:`\\pm 12\\sigma` (the neglected tail is below 1e-31 of the peak); Lorentzians over all
eigenvalues.

**Band gap.** This is matdx's one band-gap rule: every record's ``band_gap`` is computed by
:func:`band_gap` (the program parsers' own estimate in ``matdx.codes.results`` follows the
same rule and tolerance). States are occupied if their occupation exceeds half the full
occupation (1, or 2 for ``n_spins = 1`` with occupations up to 2) or, with a Fermi level, if
:math:`\\varepsilon \\le E_F + \\delta` with the tolerance :math:`\\delta` =
:data:`FERMI_TOLERANCE` = 1 meV (levels that close to :math:`E_F` count as at it: the
highest occupied level that pw.x reports as the Fermi level for fixed occupations, and
rounding in printed eigenvalues). The valence-band maximum (VBM) is the highest occupied and
the conduction-band minimum (CBM) the lowest unoccupied eigenvalue over all spins and
k-points; the gap is ``CBM - VBM``, or 0 for a metal: a band with levels below
:math:`E_F - \\delta` and above :math:`E_F + \\delta` (it crosses the Fermi level), a band
that is occupied at some k-point and empty at another, a partially occupied state (between 2 %
and 98 % of the full occupation), or VBM >= CBM. The direct gap is the smallest
``min unoccupied - max occupied`` at a single (spin, k-point); the gap is direct when that
equals the fundamental gap.

Units: eV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

__all__ = ["FERMI_TOLERANCE", "BandGap", "band_gap", "smeared_dos"]

#: Levels within this many eV of the Fermi level count as at it (the band-gap rule), eV.
FERMI_TOLERANCE = 1e-3

#: Gaussians are summed within this many standard deviations.
GAUSSIAN_RANGE = 12.0


def _as_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    eig = np.asarray(eigenvalues, dtype=np.float64)
    if eig.ndim != 3 or 0 in eig.shape:
        raise ValueError(
            f"eigenvalues must have shape (n_spins, n_kpoints, n_bands), got {eig.shape}"
        )
    if not np.all(np.isfinite(eig)):
        raise ValueError("eigenvalues contain NaN or infinite values")
    return eig


def _as_weights(weights: np.ndarray | None, n_kpoints: int) -> np.ndarray:
    if weights is None:
        return np.full(n_kpoints, 1.0 / n_kpoints)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_kpoints,):
        raise ValueError(f"weights must have shape ({n_kpoints},) (one per k-point), got {w.shape}")
    if not np.all(np.isfinite(w) & (w >= 0.0)) or w.sum() <= 0.0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.sum()


@njit(cache=True, parallel=True)
def _gaussian_dos(levels, level_weights, energies, sigma, reach):  # pragma: no cover
    n_e = energies.shape[0]
    out = np.zeros(n_e)
    norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    for e in prange(n_e):
        energy = energies[e]
        lo = np.searchsorted(levels, energy - reach)
        hi = np.searchsorted(levels, energy + reach, side="right")
        total = 0.0
        for m in range(lo, hi):
            x = (energy - levels[m]) / sigma
            total += level_weights[m] * math.exp(-0.5 * x * x)
        out[e] = total * norm
    return out


@njit(cache=True, parallel=True)
def _lorentzian_dos(levels, level_weights, energies, gamma, reach):  # pragma: no cover
    # ``reach`` is unused: Lorentzian tails are summed over every level.
    n_e = energies.shape[0]
    out = np.zeros(n_e)
    for e in prange(n_e):
        energy = energies[e]
        total = 0.0
        for m in range(levels.shape[0]):
            x = energy - levels[m]
            total += level_weights[m] / (x * x + gamma * gamma)
        out[e] = total * gamma / math.pi
    return out


def smeared_dos(
    eigenvalues: np.ndarray,
    energies: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    sigma: float = 0.1,
    kind: str = "gaussian",
) -> np.ndarray:
    """Smeared density of states per spin channel.

    Parameters
    ----------
    eigenvalues : (n_spins, n_kpoints, n_bands) float, eV
    energies : (n_energies,) float, eV
        Energies at which to evaluate the DOS (any order, need not be uniform).
    weights : (n_kpoints,) float, optional
        K-point weights (multiplicities are fine; they are normalised to sum to 1).
        Default: equal weights.
    sigma : float, eV
        Gaussian standard deviation, or Lorentzian half width at half maximum.
    kind : {"gaussian", "lorentzian"}

    Returns
    -------
    (n_spins, n_energies) float64 ndarray, states/eV per cell and spin channel

    Raises
    ------
    ValueError
        On a wrong shape, NaN values, bad weights, a non-positive ``sigma`` or an unknown
        ``kind``.

    Examples
    --------
    >>> eig = np.array([[[-1.0, 2.0]]])
    >>> e = np.linspace(-5.0, 6.0, 1101)
    >>> dos = smeared_dos(eig, e, sigma=0.2)
    >>> round(float(dos.sum() * (e[1] - e[0])), 6)
    2.0
    """
    eig = _as_eigenvalues(eigenvalues)
    grid = np.asarray(energies, dtype=np.float64)
    if grid.ndim != 1 or not np.all(np.isfinite(grid)):
        raise ValueError(f"energies must be a 1-D array of finite eV values, got {grid.shape}")
    w = _as_weights(weights, eig.shape[1])
    width = float(sigma)
    if not (math.isfinite(width) and width > 0.0):
        raise ValueError(f"sigma must be a positive width in eV, got {sigma!r}")
    if kind not in ("gaussian", "lorentzian"):
        raise ValueError(f"kind must be 'gaussian' or 'lorentzian', got {kind!r}")
    out = np.empty((eig.shape[0], grid.size))
    level_weights = np.broadcast_to(w[:, None], eig.shape[1:]).ravel()
    for s in range(eig.shape[0]):
        levels = eig[s].ravel()
        order = np.argsort(levels, kind="stable")
        kernel = _gaussian_dos if kind == "gaussian" else _lorentzian_dos
        out[s] = kernel(
            levels[order],
            np.ascontiguousarray(level_weights[order]),
            grid,
            width,
            GAUSSIAN_RANGE * width,
        )
    return out


@dataclass(frozen=True)
class BandGap:
    """Band gap and band edges.

    Attributes
    ----------
    gap : float, eV
        Fundamental gap ``CBM - VBM`` (0 for a metal).
    is_direct : bool
        The smallest direct gap equals the fundamental gap (False for a metal).
    is_metal : bool
    vbm, cbm : float, eV
        Valence-band maximum and conduction-band minimum (NaN if absent).
    vbm_index, cbm_index : (int, int, int)
        ``(spin, k-point, band)`` of the VBM and CBM (``(-1, -1, -1)`` if absent).
    direct_gap : float, eV
        Smallest gap at a single spin and k-point (0 for a metal).
    direct_index : (int, int)
        ``(spin, k-point)`` of the smallest direct gap.
    """

    gap: float
    is_direct: bool
    is_metal: bool
    vbm: float
    cbm: float
    vbm_index: tuple[int, int, int]
    cbm_index: tuple[int, int, int]
    direct_gap: float
    direct_index: tuple[int, int]


def band_gap(
    eigenvalues: np.ndarray,
    *,
    occupations: np.ndarray | None = None,
    fermi_level: float | None = None,
    tolerance: float = FERMI_TOLERANCE,
) -> BandGap:
    """Fundamental and direct band gap with the k-points of the band edges.

    Parameters
    ----------
    eigenvalues : (n_spins, n_kpoints, n_bands) float, eV
    occupations : (n_spins, n_kpoints, n_bands) float, optional
        Occupation numbers (0..1, or 0..2 for ``n_spins = 1``). Give this or
        ``fermi_level``.
    fermi_level : float, eV, optional
        States at or below ``fermi_level + tolerance`` are occupied.
    tolerance : float, eV
        Width of the window around the Fermi level treated as at it (module docstring).

    Returns
    -------
    BandGap

    Raises
    ------
    ValueError
        On a wrong shape or NaN values, if neither or both of ``occupations`` and
        ``fermi_level`` are given, or if no state is occupied or none is empty.

    Examples
    --------
    >>> eig = np.array([[[-1.0, 0.8], [-0.5, 1.0]]])       # 1 spin, 2 k-points, 2 bands
    >>> gap = band_gap(eig, fermi_level=0.0)
    >>> round(gap.gap, 6), gap.is_direct, gap.vbm_index, gap.cbm_index
    (1.3, False, (0, 1, 0), (0, 0, 1))
    """
    eig = _as_eigenvalues(eigenvalues)
    if (occupations is None) == (fermi_level is None):
        raise ValueError("give exactly one of occupations or fermi_level")
    if occupations is not None:
        occ = np.asarray(occupations, dtype=np.float64)
        if occ.shape != eig.shape:
            raise ValueError(
                f"occupations must have the shape of eigenvalues {eig.shape}, got {occ.shape}"
            )
        if not np.all(np.isfinite(occ)):
            raise ValueError("occupations contain NaN or infinite values")
        full = 2.0 if (eig.shape[0] == 1 and occ.max() > 1.0 + 1e-6) else 1.0
        occupied = occ > 0.5 * full
        at_fermi = bool(np.any((occ > 0.02 * full) & (occ < 0.98 * full)))
    else:
        e_f = float(fermi_level)
        if not math.isfinite(e_f):
            raise ValueError(f"fermi_level must be a finite energy in eV, got {fermi_level!r}")
        occupied = eig <= e_f + tolerance
        at_fermi = bool(np.any((eig < e_f - tolerance).any(axis=1)
                               & (eig > e_f + tolerance).any(axis=1)))
    if not occupied.any() or occupied.all():
        raise ValueError(
            "no state is occupied" if not occupied.any() else "every state is occupied"
        )
    valence = np.where(occupied, eig, -np.inf)
    conduction = np.where(occupied, np.inf, eig)
    vbm_flat = int(np.argmax(valence))
    cbm_flat = int(np.argmin(conduction))
    vbm = float(valence.flat[vbm_flat])
    cbm = float(conduction.flat[cbm_flat])
    vbm_index = tuple(int(i) for i in np.unravel_index(vbm_flat, eig.shape))
    cbm_index = tuple(int(i) for i in np.unravel_index(cbm_flat, eig.shape))
    # A band both occupied and empty across k-points crosses the Fermi level.
    crossing = bool(np.any(occupied.any(axis=1) & (~occupied).any(axis=1)))
    # Every (spin, k) has an occupied or an empty state, so this is never inf - inf.
    direct = conduction.min(axis=2) - valence.max(axis=2)
    direct_flat = int(np.argmin(direct))
    direct_index = tuple(int(i) for i in np.unravel_index(direct_flat, direct.shape))
    direct_gap = float(direct.flat[direct_flat])
    is_metal = crossing or at_fermi or vbm >= cbm
    if is_metal:
        return BandGap(0.0, False, True, vbm, cbm, vbm_index, cbm_index, 0.0, direct_index)
    gap = cbm - vbm
    return BandGap(
        gap=gap,
        is_direct=direct_gap == gap,
        is_metal=False,
        vbm=vbm,
        cbm=cbm,
        vbm_index=vbm_index,
        cbm_index=cbm_index,
        direct_gap=direct_gap,
        direct_index=direct_index,
    )
