"""Electronic density of states from DFT eigenvalues (the band gap is codes/bandgap.py's rule).

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

The band gap is not computed here: matdx's one band-gap rule is ``matdx.codes.bandgap``.

Units: eV.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["smeared_dos"]

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
