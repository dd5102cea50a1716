"""matdx's one band-gap rule (matdx.codes.bandgap) on toy band structures: edges, direct and
indirect gaps, spin, metals, the 1 meV tolerance at the Fermi level, and the one number every
record and parser reports (gap_value)."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.codes.bandgap import band_gap, gap_value


def _toy_bands(conduction_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosine bands on a 1-D k grid: valence max at k = 0, conduction min at k = shift."""
    k = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    valence = -0.5 + 0.3 * np.cos(k)
    conduction = 1.0 - 0.4 * np.cos(k - conduction_shift)
    deep = -3.0 + 0.1 * np.cos(k)
    return np.stack([deep, valence, conduction], axis=-1)[None], k


def test_direct_gap():
    eig, _ = _toy_bands(0.0)
    gap = band_gap(eig, fermi_level=0.0)
    assert gap.gap == pytest.approx((1.0 - 0.4) - (-0.5 + 0.3))
    assert gap.is_direct
    assert not gap.is_metal
    assert gap.vbm_index == (0, 0, 1)
    assert gap.cbm_index == (0, 0, 2)
    assert gap.direct_gap == pytest.approx(gap.gap)
    assert gap.direct_index == (0, 0)


def test_indirect_gap():
    eig, k = _toy_bands(np.pi)
    gap = band_gap(eig, fermi_level=0.2)
    assert gap.gap == pytest.approx(0.8)
    assert not gap.is_direct
    assert gap.vbm_index == (0, 0, 1)
    assert gap.cbm_index == (0, 8, 2)  # k = π is the 9th of 16 points
    # Direct gap: min over k of 1.5 + 0.1 cos(k), at k = π.
    expected = np.min(1.0 + 0.4 * np.cos(k) - (-0.5 + 0.3 * np.cos(k)))
    assert gap.direct_gap == pytest.approx(expected)
    assert gap.direct_index == (0, 8)


def test_occupations_give_the_same_gap():
    eig, _ = _toy_bands(np.pi)
    occupations = np.zeros_like(eig)
    occupations[..., :2] = 2.0  # non-spin-polarised, two electrons per state
    by_occupation = band_gap(eig, occupations=occupations)
    by_fermi = band_gap(eig, fermi_level=0.0)
    assert by_occupation == by_fermi


def test_spin_polarised_edges_in_different_channels():
    eig, _ = _toy_bands(0.0)
    spin = np.concatenate([eig, eig + 0.25], axis=0)  # spin down shifted up by 0.25 eV
    occupations = np.zeros_like(spin)
    occupations[..., :2] = 1.0
    gap = band_gap(spin, occupations=occupations)
    assert gap.vbm_index == (1, 0, 1)
    assert gap.cbm_index == (0, 0, 2)
    assert gap.gap == pytest.approx(0.8 - 0.25)
    # A direct transition keeps the spin: the smallest direct gap is 0.8 eV, so indirect.
    assert gap.direct_gap == pytest.approx(0.8)
    assert not gap.is_direct


def test_metal():
    k = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    eig = np.stack([-2 + np.cos(k), 2 * np.cos(k)], axis=-1)[None]
    gap = band_gap(eig, fermi_level=0.0)
    assert gap.is_metal
    assert gap.gap == 0.0
    assert not gap.is_direct


def test_exactly_one_of_occupations_or_fermi_level():
    eig, _ = _toy_bands(0.0)
    with pytest.raises(ValueError, match="exactly one of occupations or fermi_level"):
        band_gap(eig)
    with pytest.raises(ValueError, match="exactly one of occupations or fermi_level"):
        band_gap(eig, occupations=np.zeros_like(eig), fermi_level=0.0)


def test_every_state_occupied():
    eig, _ = _toy_bands(0.0)
    with pytest.raises(ValueError, match="every state is occupied"):
        band_gap(eig, fermi_level=10.0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="occupations must have the shape of eigenvalues"):
        band_gap(np.zeros((1, 2, 2)), occupations=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"eigenvalues must have shape \(n_spins, n_kpoints"):
        band_gap(np.zeros((3, 4)), fermi_level=0.0)


K = np.linspace(0, np.pi, 8)
VALENCE = -0.5 + 0.3 * np.cos(K)  # top at -0.2 eV (k = 0)
CONDUCTION = 1.0 - 0.4 * np.cos(K)  # bottom at 0.6 eV (k = 0)


def _bands(*bands):
    return np.stack(bands, axis=-1)[None]


CASES = {
    "insulator, Fermi level mid-gap": (_bands(VALENCE, CONDUCTION), 0.2, 0.8),
    "Fermi level at the valence-band maximum (fixed occupations)":
        (_bands(VALENCE, CONDUCTION), -0.2, 0.8),
    "valence-band maximum 0.5 meV above the Fermi level":
        (_bands(VALENCE, CONDUCTION), -0.2005, 0.8),
    "conduction-band minimum 0.5 meV above the Fermi level":
        (_bands(VALENCE, CONDUCTION), 0.5995, 0.0),
    "a band crossing the Fermi level": (_bands(VALENCE, 0.1 + np.cos(K)), 0.0, 0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_one_number_of_a_run_and_its_tolerance(case):
    eigenvalues, fermi, expected = CASES[case]
    assert gap_value(eigenvalues, fermi) == pytest.approx(expected)


def test_occupations_win_over_the_fermi_level_and_partial_ones_make_a_metal():
    eigenvalues = _bands(VALENCE, CONDUCTION)
    full = np.zeros_like(eigenvalues)
    full[..., 0] = 2.0
    assert gap_value(eigenvalues, 5.0, full) == pytest.approx(0.8)
    assert gap_value(eigenvalues, None, full / 2) == pytest.approx(0.8)
    partial = full.copy()
    partial[0, 3, 1] = 0.5  # a partially occupied conduction state: a metal
    assert gap_value(eigenvalues, None, partial) == 0.0
    assert gap_value(eigenvalues) is None and gap_value(None, 0.0) is None
    assert gap_value(eigenvalues, 10.0) is None  # every state occupied: no gap computed
