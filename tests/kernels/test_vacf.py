"""VACF (FFT, all origins) against the double loop; harmonic oscillators; the VDOS."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.vacf import velocity_autocorrelation, vibrational_dos
from tests.kernels.reference import trapezoid, vacf_direct


def _oscillators(rng, n_frames, n_atoms, omega, dt):
    """v_i(t) = A_i cos(omega t + phi_i) with random amplitudes and phases (Å/fs)."""
    t = np.arange(n_frames) * dt
    phase = rng.uniform(0, 2 * np.pi, size=(n_atoms, 3))
    amplitude = rng.uniform(0.5, 1.5, size=(n_atoms, 3))
    return amplitude * np.cos(omega * t[:, None, None] + phase)


def test_matches_double_loop_with_species_and_masses():
    rng = np.random.default_rng(41)
    v = rng.normal(size=(120, 30, 3)).cumsum(axis=0) * 0.01
    species = rng.choice(["H", "O"], 30)
    masses = np.where(species == "H", 1.008, 15.999)
    res = velocity_autocorrelation(v, 0.5, species)
    np.testing.assert_allclose(res.vacf, vacf_direct(v), rtol=1e-10, atol=1e-14)
    for label in ("H", "O"):
        np.testing.assert_allclose(
            res.species_vacf[label], vacf_direct(v[:, species == label]), rtol=1e-10, atol=1e-14
        )
    weighted = velocity_autocorrelation(v, 0.5, masses=masses)
    np.testing.assert_allclose(weighted.vacf, vacf_direct(v, masses), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.time, np.arange(120) * 0.5)


def test_normalised_starts_at_one():
    rng = np.random.default_rng(42)
    v = rng.normal(size=(50, 10, 3))
    res = velocity_autocorrelation(v, 1.0, rng.choice([1, 2], 10), normalize=True)
    assert res.vacf[0] == pytest.approx(1.0)
    for curve in res.species_vacf.values():
        assert curve[0] == pytest.approx(1.0)


def test_harmonic_oscillator_gives_cosine():
    rng = np.random.default_rng(43)
    omega, dt = 2 * np.pi / 37.0, 1.0  # a period of 37 fs
    v = _oscillators(rng, 600, 400, omega, dt)
    res = velocity_autocorrelation(v, dt, normalize=True)
    lags = res.time[:300]
    np.testing.assert_allclose(res.vacf[:300], np.cos(omega * lags), atol=0.02)


def test_vdos_peaks_at_the_oscillator_frequencies():
    rng = np.random.default_rng(44)
    dt = 0.5
    slow, fast = 5.0, 17.0  # THz
    v = np.concatenate(
        [
            _oscillators(rng, 2000, 100, 2 * np.pi * slow / 1000, dt),
            _oscillators(rng, 2000, 100, 2 * np.pi * fast / 1000, dt),
        ],
        axis=1,
    )
    res = velocity_autocorrelation(v, dt)
    nu, g = vibrational_dos(res.vacf[:1000], dt)
    assert nu[-1] == pytest.approx(1000 / (2 * dt))
    # Two separated peaks at the two frequencies, within one grid spacing.
    spacing = nu[1]
    low = nu < 11.0
    assert abs(nu[low][np.argmax(g[low])] - slow) <= spacing
    assert abs(nu[~low][np.argmax(g[~low])] - fast) <= spacing
    # Normalisation: trapezoidal integral over the returned grid is 1.
    assert trapezoid(g, nu) == pytest.approx(1.0, rel=1e-12)
    # Equal numbers of atoms and amplitudes: the two peaks hold equal weight.
    assert trapezoid(g[low], nu[low]) == pytest.approx(0.5, abs=0.03)


def test_vdos_of_a_pure_cosine_without_window():
    dt = 1.0
    c = np.cos(2 * np.pi * 0.025 * np.arange(801) * dt)  # 25 THz, an exact grid frequency
    nu, g = vibrational_dos(c, dt, window="none")
    assert nu[np.argmax(g)] == pytest.approx(25.0)


def test_bad_window():
    with pytest.raises(ValueError, match="window must be 'hann' or 'none'"):
        vibrational_dos(np.ones(10), 1.0, window="blackman")


def test_vdos_input_checks():
    with pytest.raises(ValueError, match="vacf must be 1-D with at least 2 lags"):
        vibrational_dos(np.ones((3, 3)), 1.0)
    with pytest.raises(ValueError, match="vacf contains NaN"):
        vibrational_dos(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ValueError, match="timestep must be a positive time"):
        vibrational_dos(np.ones(4), 0.0)


def test_masses_shape_and_sign():
    v = np.zeros((4, 3, 3))
    with pytest.raises(ValueError, match=r"masses must have shape \(3,\)"):
        velocity_autocorrelation(v, 1.0, masses=[1.0, 2.0])
    with pytest.raises(ValueError, match="masses must be positive"):
        velocity_autocorrelation(v, 1.0, masses=[1.0, -2.0, 1.0])


def test_nan_velocities():
    v = np.zeros((4, 3, 3))
    v[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="velocities contains NaN"):
        velocity_autocorrelation(v, 1.0)


def test_velocities_shape():
    with pytest.raises(ValueError, match=r"velocities must have shape \(n_frames, n_atoms, 3\)"):
        velocity_autocorrelation(np.zeros((4, 3, 2)), 1.0)
