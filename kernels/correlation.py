"""Time autocorrelations over all time origins, by FFT, summed over groups of atoms.

For a signal :math:`x_i(k)` of atom :math:`i` at frame :math:`k = 0 \\dots N-1` (a vector of
``n_dim`` components) the all-origin autocorrelation sum is

.. math::

    R_i(m) = \\sum_{k=0}^{N-1-m} \\mathbf{x}_i(k) \\cdot \\mathbf{x}_i(k+m),

the Wiener–Khinchin theorem gives it as the inverse transform of the power spectrum of the
zero-padded signal (padding to at least ``2N - 1`` points turns the circular correlation
into the linear one). Because the inverse transform is linear, the power spectra of all
atoms of a group are summed first and transformed back **once per group**, so the cost is
one real forward FFT per atom and component plus one inverse FFT per group:
:math:`O(n_{atoms} N \\log N)`.

Per chunk of atoms: numpy copies the signals into zero-padded rows (a strided transpose),
a numba kernel centres/scales them in place if asked, numpy's pocketfft transforms the rows,
and a numba kernel adds their power spectra into their groups. Chunks are a few MB so the
rows and spectra stay in cache and the extra memory is independent of the trajectory size.

This module is single-threaded. The FFT (numpy's, single-threaded) is ~60 % of the time;
the per-chunk numba kernels take about a millisecond each, and as parallel regions they
were slower, not faster, whenever the machine had other load.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["autocorrelation_sums", "fast_length"]

#: ``np.fft.rfft(..., out=...)`` exists from numpy 2.0; older numpy allocates per chunk.
_RFFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"

#: Bytes of complex spectrum per chunk of atoms: small enough that the rows, their
#: spectrum and the power reduction stay in cache (measured best at 4 MB).
CHUNK_BYTES = 4 * 2**20


def fast_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c`` not below ``n`` (an efficient FFT length).

    Parameters
    ----------
    n : int

    Returns
    -------
    int

    Examples
    --------
    >>> fast_length(1999)
    2000
    """
    best = 1 << max(0, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            value = p35
            while value < n:
                value *= 2
            best = min(best, value)
            p35 *= 3
        p5 *= 5
    return best


@njit(cache=True)
def _add_power(flat, groups, power):  # pragma: no cover - compiled
    """Add ``|z|^2`` of each spectrum row to its group, on the float64 view of the spectrum.

    ``flat`` is ``spectrum.view(float64)``: (n_rows, 2 n_freq), real and imaginary parts
    interleaved, so the loop is a contiguous multiply-add that vectorises; ``power`` is
    (n_groups, 2 n_freq) and its even and odd columns are summed by the caller.
    """
    for r in range(flat.shape[0]):
        g = groups[r]
        for j in range(flat.shape[1]):
            power[g, j] += flat[r, j] * flat[r, j]


@njit(cache=True)
def _prepare_rows(rows, n_frames, n_dim, scale, centre, squares):  # pragma: no cover
    """In place on ``rows[:, :n_frames]`` (one row per atom and component).

    Subtracts each row's time average if ``centre``, multiplies atom ``a``'s rows by
    ``scale[a]``, and stores ``squares[a, k] = sum_d rows[a * n_dim + d, k] ** 2``.
    """
    n_atoms = rows.shape[0] // n_dim
    for a in range(n_atoms):
        for d in range(n_dim):
            r = a * n_dim + d
            mean = 0.0
            if centre:
                for k in range(n_frames):
                    mean += rows[r, k]
                mean /= n_frames
            factor = scale[a]
            for k in range(n_frames):
                rows[r, k] = (rows[r, k] - mean) * factor
        for k in range(n_frames):
            total = 0.0
            for d in range(n_dim):
                value = rows[a * n_dim + d, k]
                total += value * value
            squares[a, k] = total


@njit(cache=True)
def _add_by_group(squares, n_atoms, groups, out):  # pragma: no cover - compiled
    for a in range(n_atoms):
        out[groups[a]] += squares[a]


def autocorrelation_sums(
    x: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    *,
    scale: np.ndarray | None = None,
    centre: bool = False,
    squares: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """All-origin autocorrelation sums R(m), summed over the atoms of each group.

    Parameters
    ----------
    x : (n_frames, n_atoms, n_dim) float64
        Signal per frame, atom and component (positions in Å or velocities in Å/fs).
    groups : (n_atoms,) int64
        Group of each atom, ``0 <= groups < n_groups``.
    n_groups : int
    scale : (n_atoms,) float64, optional
        Factor applied to each atom's signal (e.g. sqrt(mass)); default 1.
    centre : bool
        Subtract each atom's time average first (for MSDs, which it leaves unchanged).
    squares : bool
        Also return the squared norms per group and frame.

    Returns
    -------
    correlation : (n_groups, n_frames) float64 ndarray
        ``R_g(m) = sum_{i in g} sum_{k=0}^{N-1-m} x_i(k) . x_i(k+m)``, units of ``x``
        squared. Divide by ``(N - m)`` and the group size for the average.
    group_squares : (n_groups, n_frames) float64 ndarray or None
        ``sum_{i in g} |x_i(k)|^2`` per frame ``k`` (after centring and scaling), if asked.

    Examples
    --------
    >>> x = np.ones((3, 2, 1))                      # 3 frames, 2 atoms in one group
    >>> autocorrelation_sums(x, np.zeros(2, np.int64), 1)[0].round(12).tolist()
    [[6.0, 4.0, 2.0]]
    """
    n_frames, n_atoms, n_dim = x.shape
    prepare = centre or squares or scale is not None
    factors = np.ones(n_atoms) if scale is None else np.asarray(scale, dtype=np.float64)
    n_fft = fast_length(2 * n_frames - 1)
    n_freq = n_fft // 2 + 1
    chunk = int(max(1, min(n_atoms, CHUNK_BYTES // (16 * n_freq * n_dim))))
    # Buffers are reused across chunks: the zero padding past n_frames is written once.
    rows = np.zeros((chunk * n_dim, n_fft), np.float64)
    spectrum = np.empty((chunk * n_dim, n_freq), np.complex128)
    atom_squares = np.empty((chunk, n_frames), np.float64)
    power = np.zeros((n_groups, 2 * n_freq), np.float64)
    group_squares = np.zeros((n_groups, n_frames), np.float64)
    for a0 in range(0, n_atoms, chunk):
        a1 = min(n_atoms, a0 + chunk)
        n_rows = (a1 - a0) * n_dim
        block = rows[:n_rows]
        # numpy's strided copy is the fastest transpose here (frames -> row-contiguous).
        block[:, :n_frames] = x[:, a0:a1, :].reshape(n_frames, n_rows).T
        if prepare:
            _prepare_rows(block, n_frames, n_dim, factors[a0:a1], centre, atom_squares)
            _add_by_group(atom_squares, a1 - a0, groups[a0:a1], group_squares)
        if _RFFT_OUT:
            np.fft.rfft(block, axis=1, out=spectrum[:n_rows])
        else:
            spectrum[:n_rows] = np.fft.rfft(block, axis=1)
        row_groups = np.repeat(groups[a0:a1], n_dim)
        _add_power(spectrum[:n_rows].view(np.float64), row_groups, power)
    power = power[:, 0::2] + power[:, 1::2]
    correlation = np.fft.irfft(power, n=n_fft, axis=1)[:, :n_frames]
    return correlation, (group_squares if squares else None)
