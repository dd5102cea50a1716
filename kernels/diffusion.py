"""Self-diffusion coefficient from an MSD, with an error bar that accounts for time correlation.

The MSD over all time origins reuses every frame at many lags, so its values at neighbouring
lags are strongly correlated, and an ordinary least-squares fit understates the error of its
slope (a crystal then "diffuses" at seven standard errors). The estimator here follows the
approach of kinisi (McCluskey et al., *J. Chem. Phys.* 2024): model the covariance of the MSD
of an ideal random walk and fit by generalised least squares.

For lag :math:`t_i` in a run of length :math:`T` with :math:`N_\\mathrm{atoms}` atoms in
:math:`d` dimensions, the number of independent displacements is about
:math:`n_i = N_\\mathrm{atoms} T / t_i` (non-overlapping time windows), and

.. math::

    \\sigma_i^2 = \\frac{2\\,\\mathrm{MSD}_i^2}{d\\, n_i}, \\qquad
    \\Sigma_{ij} = \\sigma_i^2\\, \\frac{n_i}{n_j} \\quad (t_i \\le t_j),

since the displacement over the longer lag contains the shorter one. The fit
:math:`\\mathrm{MSD} = 2 d D t + c` over the window gives :math:`D` and
:math:`\\sigma_D = \\sqrt{[(X^T\\Sigma^{-1}X)^{-1}]_{00}} / 2d`.

**Is there diffusion?** A crystal's MSD rises within a few hundred fs to a plateau (the
atoms' vibration amplitude) and stays there. Diffusion is reported only if both

- the slope is significant: :math:`D > z\\,\\sigma_D` (``z = 2`` by default), and
- the MSD grows like diffusion over the window: its log–log exponent
  :math:`\\alpha = \\ln(\\mathrm{MSD}(t_1)/\\mathrm{MSD}(t_0)) / \\ln(t_1/t_0) \\ge 0.5`
  (1 for pure diffusion, 0 on a plateau).

Otherwise the result is "no diffusion detected" with the upper bound
:math:`D < \\max(D, 0) + z\\,\\sigma_D`.

**Fit window.** The ballistic regime (:math:`\\mathrm{MSD} \\propto t^2`) ends at the first lag
where the local exponent between stored lags falls below 1.5. By default the window runs from
10 % of the run (or the end of the ballistic regime, if later) to 50 % of the run; lags beyond
half the run average over fewer than half of the time origins. A window that starts inside the
ballistic regime is reported in ``notes``.

Units: time in fs, MSD in Å², D in Å²/fs (1 Å²/fs = 0.1 cm²/s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BALLISTIC_EXPONENT",
    "DiffusionEstimate",
    "FitWindowTooShort",
    "ballistic_end",
    "estimate_diffusion",
]

#: 1 Å²/fs = 1e-16 cm² / 1e-15 s = 0.1 cm²/s.
ANGSTROM2_PER_FS_TO_CM2_PER_S = 0.1
BALLISTIC_EXPONENT = 1.5  # local log-log slope of the MSD above which motion is ballistic
DIFFUSIVE_EXPONENT = 0.5  # log-log slope over the window below which the MSD is a plateau


@dataclass(frozen=True)
class DiffusionEstimate:
    """A diffusion coefficient, or an upper bound when no diffusion is detected.

    Attributes
    ----------
    detected : bool
        Whether the MSD shows diffusion (significant slope and diffusive growth).
    D : float, Å²/fs
        Fitted slope / 2d (reported whatever ``detected`` says; may be negative).
    D_err : float, Å²/fs
        Standard error from the correlated-MSD covariance.
    upper_bound : float or None, Å²/fs
        ``max(D, 0) + z D_err`` when no diffusion is detected, else None.
    fit_window : (float, float), fs
        Lags fitted (inclusive).
    n_points : int
        Lags inside the window.
    ballistic_end : float, fs
        Lag at which the ballistic regime ends (the first stored lag if it ended earlier).
    exponent : float
        Log–log slope of the MSD over the window.
    notes : tuple of str
        What the estimate relied on or could not check.
    """

    detected: bool
    D: float
    D_err: float
    upper_bound: float | None
    fit_window: tuple[float, float]
    n_points: int
    ballistic_end: float
    exponent: float
    notes: tuple[str, ...] = ()

    def in_cm2_per_s(self) -> tuple[float, float, float | None]:
        """``(D, D_err, upper_bound)`` in cm²/s."""
        scale = ANGSTROM2_PER_FS_TO_CM2_PER_S
        bound = None if self.upper_bound is None else self.upper_bound * scale
        return self.D * scale, self.D_err * scale, bound

    def describe(self) -> str:
        """One line in cm²/s: ``D = 5.1e-05 ± 3e-06 cm²/s`` or ``no diffusion detected, D <
        8e-08 cm²/s``."""
        d, error, bound = self.in_cm2_per_s()
        if self.detected:
            return f"D = {d:.2g} ± {error:.1g} cm²/s"
        return f"no diffusion detected, D < {bound:.1g} cm²/s"


class FitWindowTooShort(ValueError):
    """The MSD's fit window holds fewer than 3 lag times: the run is too short (or sampled too
    sparsely) past its ballistic regime for a diffusion coefficient."""


def ballistic_end(time: np.ndarray, msd: np.ndarray) -> float:
    """The lag (fs) at which the MSD stops growing ballistically (local exponent < 1.5).

    Parameters
    ----------
    time : (n_frames,) float, fs
        Lags starting at 0.
    msd : (n_frames,) float, Å²
    """
    t = np.asarray(time, dtype=np.float64)
    y = np.asarray(msd, dtype=np.float64)
    for k in range(1, t.size - 1):
        if y[k] <= 0 or y[k + 1] <= 0:
            continue
        exponent = np.log(y[k + 1] / y[k]) / np.log(t[k + 1] / t[k])
        if exponent < BALLISTIC_EXPONENT:
            return float(t[k])
    return float(t[-1])


def _covariance(t: np.ndarray, y: np.ndarray, n_atoms: int, duration: float,
                dimensions: int) -> np.ndarray:
    """Σ of the MSD of a random walk at lags ``t`` (ascending, > 0)."""
    independent = n_atoms * duration / t
    sigma = np.sqrt(2.0 / (dimensions * independent)) * np.maximum(y, 1e-12)
    correlation = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    return np.outer(sigma, sigma) * correlation


def estimate_diffusion(
    time: np.ndarray,
    msd: np.ndarray,
    n_atoms: int,
    *,
    fit_window: tuple[float, float] | None = None,
    dimensions: int = 3,
    z: float = 2.0,
) -> DiffusionEstimate:
    """Diffusion coefficient (or an upper bound) from an MSD over all time origins.

    Parameters
    ----------
    time : (n_frames,) float, fs
        Lags ``0, Δt, 2Δt, …`` (``MSDResult.time``).
    msd : (n_frames,) float, Å²
        MSD averaged over ``n_atoms`` atoms and all time origins.
    n_atoms : int
        Atoms averaged over (of the species analysed).
    fit_window : (float, float), fs, optional
        Lags fitted; default 10 % of the run (or the end of the ballistic regime) to 50 %.
    dimensions : int
        1, 2 or 3.
    z : float
        Standard errors the slope must exceed to count as diffusion.

    Returns
    -------
    DiffusionEstimate

    Raises
    ------
    FitWindowTooShort
        For a non-increasing window or fewer than 3 lags in it (a ``ValueError``).
    ValueError
        For mismatched shapes or a non-positive ``n_atoms``.

    Examples
    --------
    >>> t = np.arange(200.0)
    >>> estimate = estimate_diffusion(t, 6 * 0.25 * t + 0.1, n_atoms=100)
    >>> estimate.detected, round(estimate.D, 6)
    (True, 0.25)
    >>> estimate_diffusion(t, np.full(t.size, 0.05), n_atoms=100).detected
    False
    """
    t = np.asarray(time, dtype=np.float64)
    y = np.asarray(msd, dtype=np.float64)
    if t.ndim != 1 or y.shape != t.shape or t.size < 4:
        raise ValueError(f"time and msd must be 1-D of equal length >= 4, got {t.shape} and "
                         f"{y.shape}")
    if dimensions not in (1, 2, 3):
        raise ValueError(f"dimensions must be 1, 2 or 3, got {dimensions!r}")
    if int(n_atoms) != n_atoms or n_atoms < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms!r}")
    notes = []
    ballistic = ballistic_end(t, y)
    if fit_window is None:
        start = max(0.1 * t[-1], ballistic)
        fit_window = (start, max(0.5 * t[-1], start))
        if ballistic > 0.1 * t[-1]:
            notes.append(f"window starts at the end of the ballistic regime ({ballistic:g} fs)")
    t0, t1 = (float(v) for v in fit_window)
    mask = (t >= t0) & (t <= t1) & (t > 0)
    n_points = int(mask.sum())
    if not t1 > t0 or n_points < 3:
        raise FitWindowTooShort(
            f"fit_window {fit_window!r} fs holds {n_points} lag times; at least 3 are needed "
            f"(lags run from {t[0]:g} to {t[-1]:g} fs, ballistic regime until {ballistic:g} fs)"
        )
    if t0 < ballistic:
        notes.append(f"fit window starts at {t0:g} fs, inside the ballistic regime (until "
                     f"{ballistic:g} fs): D is overestimated")
    tw, yw = t[mask], y[mask]
    sigma = _covariance(tw, yw, int(n_atoms), float(t[-1]), dimensions)
    sigma += np.eye(tw.size) * 1e-12 * np.trace(sigma) / tw.size
    design = np.column_stack([tw, np.ones_like(tw)])
    factor = np.linalg.cholesky(sigma)
    a = np.linalg.solve(factor, design)
    b = np.linalg.solve(factor, yw)
    (slope, _), *_ = np.linalg.lstsq(a, b, rcond=None)
    slope_var = np.linalg.inv(a.T @ a)[0, 0]
    scale = 1.0 / (2.0 * dimensions)
    d, d_err = float(slope * scale), float(np.sqrt(slope_var) * scale)
    first, last = yw[0], yw[-1]
    exponent = float(np.log(last / first) / np.log(tw[-1] / tw[0])) if first > 0 and last > 0 \
        else 0.0
    detected = d > z * d_err and exponent >= DIFFUSIVE_EXPONENT
    if d > z * d_err and not detected:
        notes.append(f"the slope is significant but the MSD grows like t^{exponent:.2f} over "
                     "the window (a plateau, not diffusion)")
    return DiffusionEstimate(
        detected=detected,
        D=d,
        D_err=d_err,
        upper_bound=None if detected else max(d, 0.0) + z * d_err,
        fit_window=(float(tw[0]), float(tw[-1])),
        n_points=n_points,
        ballistic_end=ballistic,
        exponent=exponent,
        notes=tuple(notes),
    )
