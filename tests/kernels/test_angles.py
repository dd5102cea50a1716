"""Bond-angle distribution against all-triplet brute force and the fcc shell."""

from __future__ import annotations

import numpy as np
import pytest

from matdx.kernels.angles import bond_angle_distribution
from tests.kernels.reference import fcc, image_pairs, orthorhombic_cell, triclinic_cell


def _reference_angles(pos, cell, pbc, cutoff, species=None, triplet=None):
    i, j, vec = image_pairs(pos, cell, pbc, cutoff)
    bonds: dict[int, list] = {}
    for a, b, v in zip(i, j, vec, strict=True):
        bonds.setdefault(a, []).append((b, v))
        bonds.setdefault(b, []).append((a, -v))
    angles = []
    for centre, items in bonds.items():
        others = np.array([o for o, _ in items])
        vectors = np.array([v for _, v in items])
        unit = vectors / np.linalg.norm(vectors, axis=1)[:, None]
        p, q = np.triu_indices(len(items), 1)
        if triplet is not None:
            if species[centre] != triplet[1]:
                continue
            sp, sq = species[others[p]], species[others[q]]
            keep = ((sp == triplet[0]) & (sq == triplet[2])) | (
                (sp == triplet[2]) & (sq == triplet[0])
            )
            p, q = p[keep], q[keep]
        cosine = np.clip(np.sum(unit[p] * unit[q], axis=1), -1, 1)
        angles.append(np.degrees(np.arccos(cosine)))
    return np.concatenate(angles) if angles else np.zeros(0)


@pytest.mark.parametrize("kind", ["orthorhombic", "triclinic", "open"])
def test_matches_brute_force(kind):
    rng = np.random.default_rng(61)
    cell = {
        "orthorhombic": orthorhombic_cell(),
        "triclinic": triclinic_cell(rng),
        "open": None,
    }[kind]
    scale = np.diag([10.0, 10.0, 10.0]) if cell is None else cell
    frames = rng.random((2, 200, 3)) @ scale
    res = bond_angle_distribution(frames, 3.0, cell, n_bins=36)
    expected = np.mean(
        [
            np.histogram(_reference_angles(p, cell, True, 3.0), bins=36, range=(0, 180))[0]
            for p in frames
        ],
        axis=0,
    )
    np.testing.assert_array_equal(res.counts, expected)
    assert res.counts.sum() > 100
    np.testing.assert_allclose(np.sum(res.density * np.diff(res.edges)), 1.0)


def test_triplet_filter_matches_brute_force():
    rng = np.random.default_rng(62)
    cell = triclinic_cell(rng)
    pos = rng.random((250, 3)) @ cell
    species = rng.choice(["O", "Si"], 250)
    for triplet in [("O", "Si", "O"), ("Si", "O", "O"), ("O", "Si", "Si")]:
        res = bond_angle_distribution(pos, 3.2, cell, n_bins=18, species=species, triplet=triplet)
        ref = _reference_angles(pos, cell, True, 3.2, species, triplet)
        np.testing.assert_array_equal(res.counts, np.histogram(ref, bins=18, range=(0, 180))[0])


def test_fcc_first_shell_angles():
    # 12 neighbours, 66 pairs: 24 at 60°, 12 at 90°, 24 at 120°, 6 at 180°. With 179 bins
    # the angles sit inside bins, clear of rounding at the edges, and 180° (up to rounding)
    # must land in the last bin rather than past it.
    pos, cell = fcc(3.6, 3)
    res = bond_angle_distribution(pos, 3.0, cell, n_bins=179)
    per_atom = res.counts / len(pos)
    for angle, count in {60.0: 24, 90.0: 12, 120.0: 24, 180.0: 6}.items():
        k = min(np.searchsorted(res.edges, angle, side="right") - 1, 178)
        assert per_atom[k] == pytest.approx(count), angle
    assert per_atom.sum() == pytest.approx(66)


def test_water_angle():
    water = [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]
    res = bond_angle_distribution(water, 1.2, n_bins=1800)
    angle = np.degrees(np.arccos(-0.24 * 0.9572 / (0.9572 * np.hypot(0.24, 0.9266))))
    assert res.counts.sum() == 1
    assert res.edges[np.argmax(res.counts)] <= angle < res.edges[np.argmax(res.counts) + 1]


def test_no_angles_gives_nan_density():
    res = bond_angle_distribution(np.array([[0.0, 0, 0], [5.0, 0, 0]]), 1.0)
    assert res.counts.sum() == 0
    assert np.all(np.isnan(res.density))


def test_triplet_needs_species():
    with pytest.raises(ValueError, match="triplet needs species"):
        bond_angle_distribution(np.zeros((3, 3)), 1.0, triplet=("O", "Si", "O"))


def test_triplet_unknown_label():
    with pytest.raises(ValueError, match=r"triplet labels \['C'\] are not in species"):
        bond_angle_distribution(np.zeros((2, 3)), 1.0, species=["O", "Si"], triplet=("O", "C", "O"))


def test_cutoff_too_large():
    with pytest.raises(ValueError, match="cutoff = 3 Å exceeds"):
        bond_angle_distribution(np.zeros((2, 3)), 3.0, [5.0] * 3)


def test_nan_positions():
    pos = np.zeros((2, 3))
    pos[1, 2] = np.nan
    with pytest.raises(ValueError, match="positions contains NaN"):
        bond_angle_distribution(pos, 1.0)


def test_bad_bins():
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        bond_angle_distribution(np.zeros((2, 3)), 1.0, n_bins=0)
