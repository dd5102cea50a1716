"""Equilibration detection on series with a known transient, against direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.equilibration import drift, equilibration_start, statistical_inefficiency


def ar1(n: int, phi: float, seed: int) -> np.ndarray:
    """An AR(1) series x_k = phi x_{k-1} + noise (statistical inefficiency (1+phi)/(1-phi))."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for k in range(1, n):
        x[k] = phi * x[k - 1] + rng.normal()
    return x


def test_statistical_inefficiency_of_a_correlated_series():
    g = np.mean([statistical_inefficiency(ar1(4000, 0.6, seed)) for seed in range(5)])
    assert g == pytest.approx((1 + 0.6) / (1 - 0.6), rel=0.15)
    assert statistical_inefficiency(np.random.default_rng(0).normal(size=4000)) < 1.2
    assert statistical_inefficiency(np.ones(10)) == 10.0  # a constant carries no information


def test_a_decaying_transient_is_dropped_and_no_more():
    """A relaxation of ~10 frames (a quenched liquid's potential energy) on AR(1) noise."""
    starts = []
    for seed in range(10):
        transient = 30.0 * np.exp(-np.arange(200) / 4.0)
        found = equilibration_start(ar1(200, 0.3, seed) + transient)
        starts.append(found.index)
        assert found.effective_samples > 50
    assert 8 <= np.median(starts) <= 30


def test_a_steady_series_keeps_almost_everything():
    starts = [equilibration_start(ar1(200, 0.3, seed)).index for seed in range(10)]
    assert np.median(starts) <= 20


def test_drift_tells_a_trend_from_noise():
    rng = np.random.default_rng(4)
    assert abs(drift(rng.normal(size=300))) < 3
    assert drift(rng.normal(size=300) + np.linspace(0.0, 3.0, 300)) > 3
    assert drift(np.full(10, 2.0)) == 0.0


def test_bad_series_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        equilibration_start(np.array([1.0, np.nan, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="at least 4"):
        equilibration_start(np.ones(3))
    with pytest.raises(ValueError, match="max_fraction"):
        equilibration_start(np.ones(10), max_fraction=1.5)
