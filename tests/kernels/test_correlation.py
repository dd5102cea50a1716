"""All-origin autocorrelation sums by FFT against the direct double sum."""

from __future__ import annotations

import numpy as np
import pytest

import matdx.kernels.correlation as correlation
from matdx.kernels.correlation import autocorrelation_sums, fast_length


def _direct(x, groups, n_groups, scale=None, centre=False):
    x = x.copy()
    if centre:
        x -= x.mean(axis=0)
    if scale is not None:
        x *= scale[None, :, None]
    n = len(x)
    out = np.zeros((n_groups, n))
    squares = np.zeros((n_groups, n))
    for g in range(n_groups):
        members = x[:, groups == g]
        for m in range(n):
            out[g, m] = np.sum(members[m:] * members[: n - m])
        squares[g] = np.sum(members**2, axis=(1, 2))
    return out, squares


@pytest.mark.parametrize("centre", [False, True])
@pytest.mark.parametrize("chunk_bytes", [64, 4 * 2**20])
def test_matches_direct_sum(centre, chunk_bytes, monkeypatch):
    # A tiny chunk size forces many chunks of one atom each.
    monkeypatch.setattr(correlation, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(81)
    x = rng.normal(size=(57, 13, 3)) + 20.0
    groups = rng.integers(0, 3, size=13)
    scale = rng.uniform(0.5, 2.0, size=13)
    ours, squares = autocorrelation_sums(x, groups, 3, scale=scale, centre=centre, squares=True)
    expected, expected_squares = _direct(x, groups, 3, scale, centre)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(squares, expected_squares, rtol=1e-12)


def test_squares_only_on_request():
    x = np.ones((4, 2, 3))
    assert autocorrelation_sums(x, np.zeros(2, np.int64), 1)[1] is None


@pytest.mark.parametrize("n", [1, 2, 7, 97, 1999, 4097])
def test_fast_length_is_the_next_5_smooth_number(n):
    m = fast_length(n)
    assert m >= n
    assert _smooth(m)
    assert not any(_smooth(k) for k in range(n, m))


def _smooth(k):
    for p in (2, 3, 5):
        while k % p == 0:
            k //= p
    return k == 1
