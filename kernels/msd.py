"""Mean squared displacement over all time origins, and the diffusion coefficient.

For unwrapped positions :math:`\\mathbf{r}_i(k)`, ``k = 0 … N-1`` frames ``Δt`` apart,

.. math::

    \\mathrm{MSD}(m) = \\frac{1}{N-m} \\sum_{k=0}^{N-1-m}
        \\left|\\mathbf{r}_i(k+m) - \\mathbf{r}_i(k)\\right|^2 = S_1(m) - 2 S_2(m),

averaged over atoms, with (Calandrini et al., *Collection SFN* 12, 201 (2011); Kneller et
al., *Comput. Phys. Commun.* 91, 191 (1995))

.. math::

    S_1(m) = \\frac{1}{N-m}\\sum_{k=0}^{N-1-m}
        \\left(|\\mathbf{r}(k)|^2 + |\\mathbf{r}(k+m)|^2\\right),
    \\qquad
    S_2(m) = \\frac{1}{N-m}\\sum_{k=0}^{N-1-m}\\mathbf{r}(k)\\cdot\\mathbf{r}(k+m).

:math:`S_1` is linear in :math:`|\\mathbf{r}|^2`, so it is summed over the atoms of a group
first and computed from a cumulative sum; :math:`S_2` is an autocorrelation computed by FFT
(:mod:`matdx.kernels.correlation`). Each atom's trajectory is centred on its time average
first, which leaves the MSD unchanged and keeps the two large terms from cancelling.

Wrapped trajectories are unwrapped with the cell (triclinic and variable cells allowed,
:func:`matdx.kernels.cells.unwrap_positions`).

**Diffusion coefficient.** :func:`diffusion_coefficient` fits
:math:`\\mathrm{MSD}(t) = 2 d D t + c` by least squares over a window of lag times, by
default from 10 % to 50 % of the trajectory length: the first 10 % excludes the ballistic
and caging regime, and lags beyond half the run are averaged over fewer than half of the
time origins and are noisy. **Uncertainty**: the atoms of each species are dealt into
``n_blocks`` disjoint subsets (round-robin in index order); the MSD of each subset is fitted
on the same window, and the error is the standard error of the mean of the subset
estimates, :math:`\\sigma_D = \\mathrm{std}(D_b) / \\sqrt{n_b}`. It treats atoms as
independent, which holds for dilute species and approximately in liquids; it does not
capture a systematic error from a window outside the linear regime.

Units: time in fs, MSD in Å², D in Å²/fs (1 Å²/fs = 0.1 cm²/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from matdx.kernels.cells import as_species, as_trajectory, unwrap_positions
from matdx.kernels.correlation import autocorrelation_sums

__all__ = [
    "ANGSTROM2_PER_FS_TO_CM2_PER_S",
    "DiffusionCoefficient",
    "MSDResult",
    "diffusion_coefficient",
    "mean_squared_displacement",
]

#: 1 Å²/fs = 1e-16 cm² / 1e-15 s = 0.1 cm²/s.
ANGSTROM2_PER_FS_TO_CM2_PER_S = 0.1


@dataclass(frozen=True)
class MSDResult:
    """Mean squared displacement over all time origins.

    Attributes
    ----------
    time : (n_frames,) float64, fs
        Lag times ``m Δt``.
    msd : (n_frames,) float64, Å²
        MSD averaged over all atoms.
    blocks : (n_blocks, n_frames) float64, Å²
        MSD of each disjoint subset of atoms (for error estimates).
    species_msd : dict[label, (n_frames,) float64], Å²
        MSD of the atoms of each species.
    species_blocks : dict[label, (n_blocks, n_frames) float64], Å²
        Subset MSDs of each species (NaN rows for empty subsets).
    """

    time: np.ndarray
    msd: np.ndarray
    blocks: np.ndarray
    species_msd: dict = field(default_factory=dict)
    species_blocks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DiffusionCoefficient:
    """Self-diffusion coefficient from the slope of the MSD.

    Attributes
    ----------
    D : float, Å²/fs
    D_err : float, Å²/fs
        Standard error from the spread of the particle-subset estimates (NaN without
        subsets).
    D_cm2_s, D_err_cm2_s : float, cm²/s
        The same in cm²/s.
    intercept : float, Å²
        Intercept of the fitted line.
    fit_window : (float, float), fs
        Lag times fitted (inclusive).
    n_points : int
        Lags inside the window.
    """

    D: float
    D_err: float
    D_cm2_s: float
    D_err_cm2_s: float
    intercept: float
    fit_window: tuple[float, float]
    n_points: int


def _s1_sums(squares: np.ndarray) -> np.ndarray:
    """sum_{k=0}^{N-1-m} (D(k) + D(k+m)) for every lag m, per group."""
    n_frames = squares.shape[1]
    cumulative = np.zeros((squares.shape[0], n_frames + 1))
    np.cumsum(squares, axis=1, out=cumulative[:, 1:])
    m = np.arange(n_frames)
    return cumulative[:, n_frames - m] + cumulative[:, [n_frames]] - cumulative[:, m]


def mean_squared_displacement(
    positions: np.ndarray,
    timestep: float,
    species: np.ndarray | list | None = None,
    *,
    cell: np.ndarray | None = None,
    pbc: bool | np.ndarray = True,
    n_blocks: int = 5,
) -> MSDResult:
    """Mean squared displacement over all time origins (FFT), total and per species.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) float, Å
        Trajectory; unwrapped, or wrapped if ``cell`` is given.
    timestep : float, fs
        Time between stored frames.
    species : (n_atoms,) labels, optional
        Atomic numbers or symbols for per-species MSDs.
    cell : (3,), (3, 3) or (n_frames, 3, 3) float, Å, optional
        If given, positions are unwrapped with it first (a no-op for positions that are
        already unwrapped, as long as no atom moves half a cell between frames).
    pbc : bool or (3,) bool
        Periodic axes used for unwrapping.
    n_blocks : int
        Disjoint atom subsets per species for the error estimate (>= 2).

    Returns
    -------
    MSDResult

    Raises
    ------
    ValueError
        On a wrong shape, NaN positions, a singular cell, fewer than two frames, a
        non-positive timestep or ``n_blocks < 2``.

    Examples
    --------
    >>> traj = np.zeros((4, 2, 3))
    >>> traj[:, :, 0] = np.arange(4)[:, None]       # both atoms move 1 Å per frame
    >>> mean_squared_displacement(traj, timestep=2.0).msd.round(12).tolist()
    [0.0, 1.0, 4.0, 9.0]
    """
    pos = as_trajectory(positions)
    n_frames, n_atoms = pos.shape[:2]
    if n_frames < 2:
        raise ValueError(f"positions must hold at least 2 frames for an MSD, got {n_frames}")
    dt = _check_timestep(timestep)
    if int(n_blocks) != n_blocks or n_blocks < 2:
        raise ValueError(f"n_blocks must be an integer >= 2, got {n_blocks!r}")
    labels, codes = as_species(species, n_atoms)
    if cell is not None:
        pos = unwrap_positions(pos, cell, pbc)
    groups, n_groups = _block_groups(codes, len(labels), int(n_blocks))
    correlation, squares = autocorrelation_sums(pos, groups, n_groups, centre=True, squares=True)
    sums = _s1_sums(squares) - 2.0 * correlation
    # Zero lag is zero by definition; the FFT leaves rounding noise of order eps * <x²>.
    sums[:, 0] = 0.0
    sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    origins = (n_frames - np.arange(n_frames)).astype(np.float64)
    per_group = sums.reshape(len(labels), int(n_blocks), n_frames)
    per_size = sizes.reshape(len(labels), int(n_blocks))
    with np.errstate(invalid="ignore", divide="ignore"):
        blocks_by_species = per_group / (per_size[:, :, None] * origins)
        species_msd = per_group.sum(axis=1) / (per_size.sum(axis=1)[:, None] * origins)
        blocks = per_group.sum(axis=0) / (per_size.sum(axis=0)[:, None] * origins)
    total = per_group.sum(axis=(0, 1)) / (n_atoms * origins)
    return MSDResult(
        time=np.arange(n_frames) * dt,
        msd=total,
        blocks=blocks,
        species_msd={label: species_msd[s] for s, label in enumerate(labels)},
        species_blocks={label: blocks_by_species[s] for s, label in enumerate(labels)},
    )


def _check_timestep(timestep: float) -> float:
    dt = float(timestep)
    if not (np.isfinite(dt) and dt > 0.0):
        raise ValueError(f"timestep must be a positive time in fs, got {timestep!r}")
    return dt


def _block_groups(codes: np.ndarray, n_species: int, n_blocks: int) -> tuple[np.ndarray, int]:
    """Group = species * n_blocks + subset, subsets dealt round-robin within each species."""
    rank = np.empty_like(codes)
    for s in range(n_species):
        members = np.flatnonzero(codes == s)
        rank[members] = np.arange(members.size)
    return codes * n_blocks + rank % n_blocks, n_species * n_blocks


def diffusion_coefficient(
    time: np.ndarray,
    msd: np.ndarray,
    blocks: np.ndarray | None = None,
    *,
    fit_window: tuple[float, float] | None = None,
    dimensions: int = 3,
) -> DiffusionCoefficient:
    """Diffusion coefficient from the linear regime of an MSD, with a subset error bar.

    Fits ``MSD = 2 * dimensions * D * t + c`` by least squares on ``fit_window``.

    Parameters
    ----------
    time : (n_frames,) float, fs
    msd : (n_frames,) float, Å²
    blocks : (n_blocks, n_frames) float, Å², optional
        MSDs of disjoint atom subsets (``MSDResult.blocks`` or ``species_blocks[label]``);
        each is fitted on the same window and ``D_err = std(D_b, ddof=1) / sqrt(n_b)``.
        Rows with NaN (empty subsets) are skipped.
    fit_window : (float, float), fs, optional
        First and last lag time fitted. Default: 10 % to 50 % of ``time[-1]``.
    dimensions : int
        Dimensionality of the diffusion (3 for bulk, 2 for a surface, 1 for a channel).

    Returns
    -------
    DiffusionCoefficient

    Raises
    ------
    ValueError
        If the shapes differ, fewer than 3 lags fall in the window, or the window is
        not increasing.

    Examples
    --------
    >>> t = np.arange(100.0)
    >>> round(diffusion_coefficient(t, 6 * 0.25 * t).D, 12)
    0.25
    """
    t = np.asarray(time, dtype=np.float64)
    y = np.asarray(msd, dtype=np.float64)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(f"time and msd must be 1-D of equal length, got {t.shape} and {y.shape}")
    if dimensions not in (1, 2, 3):
        raise ValueError(f"dimensions must be 1, 2 or 3, got {dimensions!r}")
    if fit_window is None:
        fit_window = (0.1 * t[-1], 0.5 * t[-1])
    t0, t1 = (float(v) for v in fit_window)
    if not t1 > t0:
        raise ValueError(f"fit_window must be increasing (start, end) in fs, got {fit_window!r}")
    mask = (t >= t0) & (t <= t1)
    n_points = int(mask.sum())
    if n_points < 3:
        raise ValueError(
            f"fit_window {fit_window!r} fs contains {n_points} lag times; at least 3 are needed "
            f"(lags run from {t[0]:g} to {t[-1]:g} fs)"
        )
    slope, intercept = np.polyfit(t[mask], y[mask], 1)
    scale = 1.0 / (2.0 * dimensions)
    error = np.nan
    if blocks is not None:
        b = np.asarray(blocks, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != t.size:
            raise ValueError(f"blocks must have shape (n_blocks, {t.size}), got {b.shape}")
        b = b[np.all(np.isfinite(b[:, mask]), axis=1)]
        if b.shape[0] >= 2:
            slopes = np.polyfit(t[mask], b[:, mask].T, 1)[0] * scale
            error = float(np.std(slopes, ddof=1) / np.sqrt(slopes.size))
    d = float(slope * scale)
    return DiffusionCoefficient(
        D=d,
        D_err=error,
        D_cm2_s=d * ANGSTROM2_PER_FS_TO_CM2_PER_S,
        D_err_cm2_s=error * ANGSTROM2_PER_FS_TO_CM2_PER_S,
        intercept=float(intercept),
        fit_window=(t0, t1),
        n_points=n_points,
    )
