"""One band-gap rule for every record: the record's ``band_gap`` (matdx.kernels.dos) and the
program parsers' estimate (matdx.codes.results) agree, 1 meV tolerance at the Fermi level."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.codes.results import band_gap as parser_gap
from matdx.kernels.dos import band_gap

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
def test_the_record_and_the_parser_apply_the_same_rule(case):
    eigenvalues, fermi, expected = CASES[case]
    gap = band_gap(eigenvalues, fermi_level=fermi)
    record = 0.0 if gap.is_metal else gap.gap
    assert record == pytest.approx(expected)
    assert parser_gap(eigenvalues, fermi_level=fermi) == pytest.approx(record)


def test_occupations_give_the_same_gap_by_both():
    eigenvalues = _bands(VALENCE, CONDUCTION)
    full = np.zeros_like(eigenvalues)
    full[..., 0] = 2.0
    assert band_gap(eigenvalues, occupations=full).gap == pytest.approx(0.8)
    assert parser_gap(eigenvalues, occupations=full / 2) == pytest.approx(0.8)
    partial = full.copy()
    partial[0, 3, 1] = 0.5  # a partially occupied conduction state: a metal
    assert band_gap(eigenvalues, occupations=partial).is_metal
    assert parser_gap(eigenvalues, occupations=partial / 2) == 0.0

