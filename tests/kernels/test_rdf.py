"""g(r) against brute-force histograms, ASE, an ideal gas and an fcc crystal."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.geometry.analysis import Analysis
from ase.geometry.rdf import get_rdf

from matdx.kernels.rdf import (
    RDFAccumulator,
    radial_distribution,
    running_coordination_number,
    shell_volumes,
)
from tests.kernels.reference import (
    fcc,
    image_pairs,
    orthorhombic_cell,
    rdf_histogram,
    triclinic_cell,
    widths,
)


@pytest.fixture(params=["orthorhombic", "triclinic"])
def cell(request) -> np.ndarray:
    if request.param == "orthorhombic":
        return orthorhombic_cell()
    return triclinic_cell(np.random.default_rng(21))


def _shells(r_max, n_bins):
    edges = np.linspace(0.0, r_max, n_bins + 1)
    return 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)


def test_total_and_partial_match_brute_force(cell):
    rng = np.random.default_rng(22)
    n_frames, n_atoms, n_bins = 3, 120, 40
    pos = (rng.random((n_frames, n_atoms, 3)) * 1.5 - 0.2) @ cell
    species = rng.choice(["O", "Si"], n_atoms, p=[0.65, 0.35])
    r_max = 0.99 * widths(cell).min() / 2
    res = radial_distribution(pos, cell, r_max, n_bins, species)
    volume = abs(np.linalg.det(cell))
    shells = _shells(r_max, n_bins)
    n_o, n_si = np.sum(species == "O"), np.sum(species == "Si")

    total = np.mean([rdf_histogram(p, cell, r_max, n_bins) for p in pos], axis=0)
    np.testing.assert_allclose(
        res.g, 2 * total * volume / (n_atoms * (n_atoms - 1) * shells), rtol=1e-12
    )
    oo = np.mean([rdf_histogram(p, cell, r_max, n_bins, species, ("O", "O")) for p in pos], 0)
    np.testing.assert_allclose(
        res.partial[("O", "O")], 2 * oo * volume / (n_o * (n_o - 1) * shells), rtol=1e-12
    )
    sio = np.mean([rdf_histogram(p, cell, r_max, n_bins, species, ("O", "Si")) for p in pos], 0)
    expected = sio * volume / (n_o * n_si * shells)
    np.testing.assert_allclose(res.partial[("O", "Si")], expected, rtol=1e-12)
    np.testing.assert_array_equal(res.partial[("Si", "O")], res.partial[("O", "Si")])
    assert res.n_frames == n_frames
    np.testing.assert_allclose(res.r, (res.edges[1:] + res.edges[:-1]) / 2)


def test_variable_cell_averages_per_frame_normalisation():
    rng = np.random.default_rng(23)
    base = triclinic_cell(rng)
    cells = np.array([base * s for s in (1.0, 1.1, 1.2)])
    pos = np.einsum("fad,fde->fae", rng.random((3, 100, 3)), cells)
    r_max, n_bins = 0.99 * widths(base).min() / 2, 25
    res = radial_distribution(pos, cells, r_max, n_bins)
    frames = [
        rdf_histogram(p, c, r_max, n_bins) * abs(np.linalg.det(c))
        for p, c in zip(pos, cells, strict=True)
    ]
    expected = 2 * np.mean(frames, axis=0) / (100 * 99 * _shells(r_max, n_bins))
    np.testing.assert_allclose(res.g, expected, rtol=1e-12)


@pytest.mark.parametrize("elements", [None, ("Si", "O"), ("O", "O"), ("O", "Si")])
def test_agrees_with_ase(cell, elements):
    rng = np.random.default_rng(24)
    species = rng.choice(["O", "Si"], 90)
    frames = (rng.random((3, 90, 3)) * 1.2) @ cell
    r_max, n_bins = 0.999 * widths(cell).min() / 2, 60
    images = [Atoms(species, positions=p, cell=cell, pbc=True) for p in frames]
    # ASE normalises by N_a N_b (finite_size=False) and averages the per-frame g(r).
    res = radial_distribution(frames, cell, r_max, n_bins, species, finite_size=False)
    ours = res.g if elements is None else res.partial[elements]
    theirs, r = get_rdf(images, r_max, n_bins, elements=elements)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.r, r, rtol=0, atol=1e-12)


# ASE points from Analysis.get_rdf to ase.geometry.rdf.get_rdf (tested above); both apply.
@pytest.mark.filterwarnings("ignore:Use `ase.geometry.rdf.get_rdf` instead:FutureWarning")
def test_agrees_with_ase_analysis_per_image(cell):
    rng = np.random.default_rng(29)
    frames = rng.random((2, 70, 3)) @ cell
    r_max, n_bins = 0.999 * widths(cell).min() / 2, 45
    images = [Atoms(f"Cu{len(p)}", positions=p, cell=cell, pbc=True) for p in frames]
    theirs = Analysis(images).get_rdf(r_max, n_bins)
    for frame, g in zip(frames, theirs, strict=True):
        ours = radial_distribution(frame, cell, r_max, n_bins, finite_size=False)
        np.testing.assert_allclose(ours.g, g, rtol=0, atol=1e-10)


def test_ideal_gas_tends_to_one(cell):
    rng = np.random.default_rng(25)
    n_frames, n_atoms, n_bins = 8, 400, 20
    pos = rng.random((n_frames, n_atoms, 3)) @ cell
    r_max = widths(cell).min() / 2
    res = radial_distribution(pos, cell, r_max, n_bins)
    # Poisson error of each bin from its expected ordered-pair count.
    expected_pairs = n_frames * n_atoms * (n_atoms - 1) * _shells(r_max, n_bins)
    sigma = 1.0 / np.sqrt(expected_pairs / abs(np.linalg.det(cell)) / 2)
    z = (res.g - 1.0) / sigma
    assert np.all(np.abs(z[2:]) < 5.0)
    assert abs(np.average(res.g, weights=1 / sigma**2) - 1.0) < 5 * np.sqrt(
        1 / np.sum(1 / sigma**2)
    )


def test_ideal_gas_without_finite_size_correction_is_low_by_one_over_n():
    rng = np.random.default_rng(26)
    pos = rng.random((2, 50, 3)) * 10.0
    with_fs = radial_distribution(pos, [10.0] * 3, 5.0, 10)
    without = radial_distribution(pos, [10.0] * 3, 5.0, 10, finite_size=False)
    np.testing.assert_allclose(without.g, with_fs.g * 49 / 50, rtol=1e-14)
    assert with_fs.density == pytest.approx(49 / 1000)
    assert without.density == pytest.approx(50 / 1000)


def test_fcc_first_shell():
    a = 4.05
    pos, cell = fcc(a, 3)
    # 149 bins keep both shells well inside a bin, away from rounding at the edges.
    res = radial_distribution(pos, cell, 1.5 * a, 149)
    first = a / np.sqrt(2)
    k = np.searchsorted(res.edges, first, side="right") - 1
    assert min(first - res.edges[k], res.edges[k + 1] - first) > 1e-3
    assert np.all(res.g[:k] == 0)
    assert res.g[k] > 0
    n = running_coordination_number(res.edges, res.g, res.density)
    assert n[k] == pytest.approx(12.0, rel=1e-12)
    second = np.searchsorted(res.edges, a, side="right") - 1
    assert n[second - 1] == pytest.approx(12.0, rel=1e-12)
    assert n[second] == pytest.approx(18.0, rel=1e-12)


def test_distance_at_r_max_lands_in_last_bin():
    # Simple cubic, L = 6 Å, r_max = L / 2 = 3 Å: the 6 neighbours at 2 spacings sit exactly
    # at r_max (both images of each) and must be counted in the last bin.
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
    res = radial_distribution(grid, [6.0] * 3, 3.0, 10)
    n = running_coordination_number(res.edges, res.g, res.density)
    assert n[-1] == pytest.approx(32.0, rel=1e-12)
    assert n[-2] == pytest.approx(26.0, rel=1e-12)


def test_running_coordination_matches_neighbour_counts(cell):
    rng = np.random.default_rng(27)
    pos = rng.random((150, 3)) @ cell
    species = rng.choice([8, 14], 150)
    r_max = 0.99 * widths(cell).min() / 2
    res = radial_distribution(pos, cell, r_max, 30, species)
    i, j, v = image_pairs(pos, cell, True, r_max)
    d = np.linalg.norm(v, axis=1)
    for a, b in [(8, 14), (14, 8), (8, 8)]:
        n = running_coordination_number(res.edges, res.partial[(a, b)], res.partial_density[(a, b)])
        hits = np.concatenate(
            [d[(species[i] == a) & (species[j] == b)], d[(species[j] == a) & (species[i] == b)]]
        )
        counts = np.array([np.sum(hits <= e) for e in res.edges[1:]]) / np.sum(species == a)
        # Bins are [r_k, r_k+1) so n at the upper edge counts d < edge; distances sit
        # nowhere near an edge in random data, so <= and < agree.
        np.testing.assert_allclose(n, counts, rtol=1e-12, atol=1e-12)


def test_accumulating_blocks_equals_one_call():
    rng = np.random.default_rng(28)
    cell = triclinic_cell(rng)
    pos = rng.random((6, 80, 3)) @ cell
    species = rng.choice(["A", "B"], 80)
    r_max = 0.99 * widths(cell).min() / 2
    once = radial_distribution(pos, cell, r_max, 20, species)
    acc = RDFAccumulator(r_max, 20, species)
    for block in (pos[:1], pos[1:4], pos[4:]):
        acc.update(block, cell)
    blocks = acc.result()
    np.testing.assert_array_equal(blocks.g, once.g)
    for key in once.partial:
        np.testing.assert_array_equal(blocks.partial[key], once.partial[key])


def test_shell_volumes_sum_to_sphere():
    edges = np.linspace(0, 3.0, 7)
    assert shell_volumes(edges).sum() == pytest.approx(4 / 3 * np.pi * 27)


def test_r_max_too_large_names_argument():
    with pytest.raises(ValueError, match=r"r_max = 6 Å exceeds .* 5 Å"):
        radial_distribution(np.zeros((2, 3)), [10.0] * 3, 6.0, 10)


def test_bad_bins():
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        radial_distribution(np.zeros((2, 3)), [10.0] * 3, 2.0, 0)


def test_species_length_mismatch():
    with pytest.raises(ValueError, match="species must hold one label per atom"):
        radial_distribution(np.zeros((3, 3)), [10.0] * 3, 2.0, 10, species=[1, 2])


def test_cell_per_frame_count_mismatch():
    with pytest.raises(ValueError, match=r"cell with one cell per frame must have shape \(2,"):
        radial_distribution(np.zeros((2, 3, 3)), np.ones((3, 3, 3)) * np.eye(3), 0.4, 10)


def test_nan_positions():
    pos = np.zeros((2, 4, 3))
    pos[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match="positions contains NaN"):
        radial_distribution(pos, [10.0] * 3, 2.0, 10)


def test_singular_cell():
    with pytest.raises(ValueError, match="cell is singular"):
        radial_distribution(np.zeros((2, 3)), np.ones((3, 3)), 0.1, 10)


def test_atom_count_change_between_blocks():
    acc = RDFAccumulator(2.0, 10).update(np.zeros((1, 4, 3)), [10.0] * 3)
    with pytest.raises(ValueError, match="positions has 5 atoms but earlier frames"):
        acc.update(np.zeros((1, 5, 3)), [10.0] * 3)


def test_result_before_update():
    with pytest.raises(ValueError, match="no frames were added"):
        RDFAccumulator(2.0, 10).result()
