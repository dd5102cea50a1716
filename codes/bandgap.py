"""The band gap of Kohn–Sham eigenvalues: matdx's one band-gap rule.

Every ``band_gap`` matdx reports comes from :func:`band_gap` here: the record of a run
(``matdx.recipes.calculation.record_band_gap``, through :func:`gap_value`), the band-structure
recipe, the program parsers' :attr:`~matdx.codes.results.CalculationResult.band_gap` and the
after-the-run checks that ask whether a finished run found a metal.

**The rule.** States are occupied if their occupation exceeds half the full
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

__all__ = ["FERMI_TOLERANCE", "BandGap", "NoGap", "band_gap", "gap_value"]

#: Levels within this many eV of the Fermi level count as at it (the band-gap rule), eV.
FERMI_TOLERANCE = 1e-3


class NoGap(ValueError):
    """No state or every state is occupied: the eigenvalues hold no gap to measure."""


def _as_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """``eigenvalues`` as a float array of shape (n_spins, n_kpoints, n_bands) without NaN."""
    eig = np.asarray(eigenvalues, dtype=np.float64)
    problem = (
        f"eigenvalues must have shape (n_spins, n_kpoints, n_bands), got {eig.shape}"
        if eig.ndim != 3 or 0 in eig.shape
        else None if np.isfinite(eig).all() else "eigenvalues contain NaN or infinite values"
    )
    if problem is not None:
        raise ValueError(problem)
    return eig


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
        raise NoGap(
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


def gap_value(
    eigenvalues: np.ndarray | None,
    fermi_level: float | None = None,
    occupations: np.ndarray | None = None,
) -> float | None:
    """The band gap of a run as one number, eV: :func:`band_gap` by the occupations when the
    program printed them, else by the Fermi level; 0.0 for a metal.

    Parameters
    ----------
    eigenvalues : (n_spins, n_kpoints, n_bands) float, eV, or None
    fermi_level : float, eV, optional
    occupations : (n_spins, n_kpoints, n_bands) float, optional

    Returns
    -------
    float or None
        None without (finite) eigenvalues, without occupations or a Fermi level, or when no
        state or every state is occupied (no empty band was computed).

    Raises
    ------
    ValueError
        On a wrong shape (a parser's bug, never hidden as "no gap").
    """
    if eigenvalues is None or not np.all(np.isfinite(np.asarray(eigenvalues, dtype=float))):
        return None  # a program that printed overflowed levels ("*****") gives no gap
    try:
        if occupations is not None:
            gap = band_gap(eigenvalues, occupations=occupations)
        elif fermi_level is not None:
            gap = band_gap(eigenvalues, fermi_level=float(fermi_level))
        else:
            return None
    except NoGap:
        return None
    return 0.0 if gap.is_metal else float(gap.gap)
