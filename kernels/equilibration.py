"""Where an MD run's observables become steady: the equilibrated part of a time series.

A run that starts away from equilibrium (a liquid quenched from a premelt, a crystal heated
from rest) relaxes over its first frames; averages and diffusion coefficients that include
them are biased. Dropping a fixed fraction of the run is either too little or too much. The
start is chosen here as in Chodera (*J. Chem. Theory Comput.* 12, 1799, 2016): for each
candidate start :math:`t_0` the rest of the series :math:`x_{t_0} \\dots x_{N-1}` has a
statistical inefficiency

.. math::

    g(t_0) = 1 + 2 \\sum_{k \\ge 1} \\Bigl(1 - \\frac{k}{N - t_0}\\Bigr) C(k),

with :math:`C(k)` its normalised autocorrelation summed until it first drops to zero or
below, and holds :math:`N_\\mathrm{eff}(t_0) = (N - t_0) / g(t_0)` independent samples. A
transient inflates the variance and the correlation of what follows it, so the start that
maximises :math:`N_\\mathrm{eff}` drops the transient and no more. Candidates run up to
half the series: a run whose observables are still moving at half its length is flagged by
:func:`drift`, not cut to nothing.

:func:`drift` then tests the equilibrated part for stationarity: the difference of the means
of its two halves in standard errors, each error from the half's own variance and
statistical inefficiency (block averages of correlated samples).

Units are those of the series (K, eV); indices count frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EquilibrationStart", "drift", "equilibration_start", "statistical_inefficiency"]


def statistical_inefficiency(values: np.ndarray) -> float:
    """``g >= 1``: how many correlated samples make one independent sample.

    Parameters
    ----------
    values : (n,) float
        A time series, equally spaced.

    Returns
    -------
    float
        1 for uncorrelated samples; ``n`` for a constant series (no information).

    Examples
    --------
    >>> round(statistical_inefficiency(np.random.default_rng(0).normal(size=4000)), 1)
    1.0
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        return float(max(n, 1))
    x = x - x.mean()
    variance = float(x @ x) / n
    if variance <= 0.0:
        return float(n)
    size = 1 << int(2 * n - 1).bit_length()
    spectrum = np.fft.rfft(x, size)
    correlation = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    correlation /= variance * np.arange(n, 0, -1)  # mean over the n - k origins of each lag
    g = 1.0
    for k in range(1, n - 1):
        if correlation[k] <= 0.0:
            break
        g += 2.0 * correlation[k] * (1.0 - k / n)
    return float(max(g, 1.0))


@dataclass(frozen=True)
class EquilibrationStart:
    """The first equilibrated frame of a series.

    Attributes
    ----------
    index : int
        First frame kept.
    inefficiency : float
        Statistical inefficiency of the frames kept.
    effective_samples : float
        ``(n - index) / inefficiency``.
    """

    index: int
    inefficiency: float
    effective_samples: float


def equilibration_start(values: np.ndarray, *, max_fraction: float = 0.5) -> EquilibrationStart:
    """The start that keeps the most independent samples (Chodera 2016).

    Parameters
    ----------
    values : (n,) float
        A time series (a temperature in K, a potential energy in eV), equally spaced.
    max_fraction : float
        Candidate starts run over this leading fraction of the series.

    Returns
    -------
    EquilibrationStart

    Raises
    ------
    ValueError
        For a series that is not 1-D with at least 4 finite values, or ``max_fraction``
        outside (0, 1).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> series = np.concatenate([np.linspace(50.0, 1.0, 20), np.zeros(180)])
    >>> equilibration_start(series + rng.normal(size=200)).index >= 15
    True
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < 4:
        raise ValueError(f"values must be a 1-D series of at least 4 values, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values: the series holds non-finite values (NaN or inf)")
    if not 0.0 < max_fraction < 1.0:
        raise ValueError(f"max_fraction must be in (0, 1), got {max_fraction!r}")
    best = EquilibrationStart(0, statistical_inefficiency(x), 0.0)
    best = EquilibrationStart(0, best.inefficiency, float(x.size / best.inefficiency))
    for start in range(1, int(max_fraction * x.size) + 1):
        g = statistical_inefficiency(x[start:])
        effective = (x.size - start) / g
        if effective > best.effective_samples:
            best = EquilibrationStart(start, g, float(effective))
    return best


def drift(values: np.ndarray) -> float:
    """Difference of the means of the second and first half, in standard errors.

    Each half's standard error is ``sqrt(var * g / n)`` with its statistical inefficiency
    ``g``; ``|drift| > 3`` says the series is not steady.

    Parameters
    ----------
    values : (n,) float, n >= 4

    Returns
    -------
    float
        Signed: positive when the second half is higher; 0 for a constant series.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < 4:
        raise ValueError(f"values must be a 1-D series of at least 4 values, got {x.shape}")
    half = x.size // 2
    first, second = x[:half], x[half:]
    error2 = sum(float(np.var(p)) * statistical_inefficiency(p) / p.size for p in (first, second))
    difference = float(second.mean() - first.mean())
    if error2 <= 0.0:
        return 0.0 if difference == 0.0 else float(np.sign(difference) * np.inf)
    return difference / float(np.sqrt(error2))
