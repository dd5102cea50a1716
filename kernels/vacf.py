"""Velocity autocorrelation function over all time origins, and the vibrational DOS.

.. math::

    C(m) = \\frac{1}{N_{atoms}}\\sum_i \\frac{1}{N-m}\\sum_{k=0}^{N-1-m}
        w_i\\,\\mathbf{v}_i(k)\\cdot\\mathbf{v}_i(k+m),

with :math:`w_i = 1` or, mass-weighted, :math:`w_i = m_i` (then :math:`C(0) = 3 k_B T`
per atom in equipartition). Computed by FFT (:mod:`matdx.kernels.correlation`).

**Vibrational density of states.** :func:`vibrational_dos` takes the cosine transform of the
(optionally windowed) VACF, its even extension :math:`C(-t) = C(t)` being assumed:

.. math::

    g(\\nu) \\propto \\int_{-T}^{T} W(t)\\,C(t)\\,e^{-2\\pi i \\nu t}\\,dt
        = 2\\int_0^{T} W(t)\\,C(t)\\cos(2\\pi\\nu t)\\,dt,

evaluated as the discrete cosine transform (DCT-I) of the samples. Frequencies are
ordinary frequencies :math:`\\nu` in THz (not angular; 1 fs⁻¹ = 1000 THz) from 0 to the
Nyquist frequency :math:`1/(2\\Delta t)`, spaced :math:`1/(2 (N_{lag}-1) \\Delta t)`.
**Normalisation**: :math:`\\int_0^{\\nu_{max}} g(\\nu)\\,d\\nu = 1` (trapezoidal rule on the
returned grid), so ``3 * n_atoms * g`` counts modes per THz. ``W`` is a Hann taper
:math:`\\cos^2(\\pi t / 2T)` by default, which suppresses the ringing from truncating
:math:`C(t)` at the last lag.

Units: time in fs, velocities in Å/fs, C in Å²/fs² (amu·Å²/fs² mass-weighted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from matdx.kernels.cells import as_species, as_trajectory
from matdx.kernels.correlation import autocorrelation_sums

__all__ = ["VACFResult", "velocity_autocorrelation", "vibrational_dos"]

#: 1 fs⁻¹ expressed in THz.
THZ_PER_INVERSE_FS = 1000.0


@dataclass(frozen=True)
class VACFResult:
    """Velocity autocorrelation over all time origins.

    Attributes
    ----------
    time : (n_frames,) float64, fs
        Lag times.
    vacf : (n_frames,) float64, Å²/fs² (amu·Å²/fs² if mass-weighted)
        Averaged over all atoms (divided by ``vacf[0]`` if normalised).
    species_vacf : dict[label, (n_frames,) float64]
        The same per species.
    """

    time: np.ndarray
    vacf: np.ndarray
    species_vacf: dict = field(default_factory=dict)


def velocity_autocorrelation(
    velocities: np.ndarray,
    timestep: float,
    species: np.ndarray | list | None = None,
    *,
    masses: np.ndarray | None = None,
    normalize: bool = False,
) -> VACFResult:
    """Velocity autocorrelation function over all time origins (FFT), total and per species.

    Parameters
    ----------
    velocities : (n_frames, n_atoms, 3) float, Å/fs
    timestep : float, fs
        Time between stored frames.
    species : (n_atoms,) labels, optional
        Atomic numbers or symbols for per-species VACFs.
    masses : (n_atoms,) float, amu, optional
        Mass-weight each atom's contribution (``m_i v_i(0) . v_i(t)``).
    normalize : bool
        Divide each curve by its value at zero lag.

    Returns
    -------
    VACFResult

    Raises
    ------
    ValueError
        On a wrong shape, NaN velocities, a non-positive timestep, or ``masses`` of the
        wrong shape or not positive.

    Examples
    --------
    >>> v = np.ones((5, 2, 3))
    >>> velocity_autocorrelation(v, timestep=1.0).vacf.tolist()
    [3.0, 3.0, 3.0, 3.0, 3.0]
    """
    vel = as_trajectory(velocities, name="velocities")
    n_frames, n_atoms = vel.shape[:2]
    dt = float(timestep)
    if not (np.isfinite(dt) and dt > 0.0):
        raise ValueError(f"timestep must be a positive time in fs, got {timestep!r}")
    scale = None
    if masses is not None:
        m = np.asarray(masses, dtype=np.float64)
        if m.shape != (n_atoms,):
            raise ValueError(f"masses must have shape ({n_atoms},), got {m.shape}")
        if not np.all(np.isfinite(m) & (m > 0.0)):
            raise ValueError("masses must be positive and finite (amu)")
        scale = np.sqrt(m)
    labels, codes = as_species(species, n_atoms)
    correlation, _ = autocorrelation_sums(vel, codes, len(labels), scale=scale)
    sizes = np.bincount(codes, minlength=len(labels)).astype(np.float64)
    origins = (n_frames - np.arange(n_frames)).astype(np.float64)
    per_species = correlation / (sizes[:, None] * origins)
    total = correlation.sum(axis=0) / (n_atoms * origins)
    if normalize:
        per_species = per_species / per_species[:, :1]
        total = total / total[0]
    return VACFResult(
        time=np.arange(n_frames) * dt,
        vacf=total,
        species_vacf={label: per_species[s] for s, label in enumerate(labels)},
    )


def vibrational_dos(
    vacf: np.ndarray,
    timestep: float,
    *,
    window: str = "hann",
) -> tuple[np.ndarray, np.ndarray]:
    """Vibrational density of states from a VACF (cosine transform), normalised to 1.

    Parameters
    ----------
    vacf : (n_lags,) float
        VACF at lags ``0, Δt, 2Δt, …`` (e.g. ``VACFResult.vacf``, possibly truncated to
        the lags that are well converged).
    timestep : float, fs
        Lag spacing Δt.
    window : {"hann", "none"}
        Taper applied to the VACF before the transform (see the module docstring).

    Returns
    -------
    frequency : (n_lags,) float64, THz
        Ordinary frequencies ``0 … 1 / (2 Δt)``.
    dos : (n_lags,) float64, 1/THz
        ``∫ dos dν = 1`` over the returned grid (trapezoidal rule).

    Raises
    ------
    ValueError
        If ``vacf`` is not 1-D with at least 2 finite values, the timestep is not positive,
        the window is unknown, or the spectrum integrates to zero.

    Examples
    --------
    >>> t = np.arange(400) * 1.0                       # fs
    >>> c = np.cos(2 * np.pi * 0.01 * t)               # 0.01 fs⁻¹ = 10 THz
    >>> nu, g = vibrational_dos(c, 1.0)
    >>> round(float(nu[np.argmax(g)]), 1)
    10.0
    """
    c = np.asarray(vacf, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"vacf must be 1-D with at least 2 lags, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("vacf contains NaN or infinite values")
    dt = float(timestep)
    if not (np.isfinite(dt) and dt > 0.0):
        raise ValueError(f"timestep must be a positive time in fs, got {timestep!r}")
    n = c.size
    if window == "hann":
        taper = np.cos(0.5 * np.pi * np.arange(n) / (n - 1)) ** 2
    elif window == "none":
        taper = np.ones(n)
    else:
        raise ValueError(f"window must be 'hann' or 'none', got {window!r}")
    tapered = c * taper
    # DCT-I through the real FFT of the even extension c0 c1 … c_{n-1} c_{n-2} … c1.
    extended = np.concatenate([tapered, tapered[-2:0:-1]])
    spectrum = np.fft.rfft(extended).real * dt
    frequency = np.fft.rfftfreq(extended.size, d=dt) * THZ_PER_INVERSE_FS
    # Trapezoidal rule on the uniform grid.
    area = (spectrum.sum() - 0.5 * (spectrum[0] + spectrum[-1])) * frequency[1]
    if not (np.isfinite(area) and area != 0.0):
        raise ValueError("the spectrum of vacf integrates to zero; cannot normalise the DOS")
    return frequency, spectrum / area
